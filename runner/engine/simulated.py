"""Simulated backend: LineRequests -> deterministic OpenAI-shaped LineResults, no model.

For tests and for measuring the pipeline's own ceiling; never a default. Outputs depend only on the
request (prompt, seed, choice index), so a line redone after a crash gives the same answer.

engine_args (models.yaml):
- tokens_per_second: aggregate output-token rate across all lines (absent or 0 = as fast as possible).
- latency_per_line: seconds each line waits at least before it can finish (default 0).
- dimensions: embedding size when a request gives none (default 16).
- max_inflight: the engine's in-flight window for this model (default 256).
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.bodies import ChatInput, EmbeddingInput, SamplingOptions, parse_line
from runner.engine.responses import (
    ChoiceOutput,
    PromptOutput,
    TokenLogprob,
    TopLogprob,
    chat_completion_body,
    completion_body,
    embedding_body,
    usage_of,
)
from runner.errors import ConfigError, endpoint_mismatch
from runner.model_specs import ModelSpec
from runner.settings import Settings

_WORDS = (
    "the quick brown fox jumps over a lazy dog while batch lines stream into files and every token counts "
    "engine model window queue writer feeder result prompt answer simple small fast steady bright calm "
    "river stone cloud light north south paper glass green blue yellow orange seven eleven ninety"
).split()

# Longest step() sleep, so the loop gets back to its queues often.
_MAX_SLEEP = 0.05


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def _words(seed: bytes, count: int) -> list[str]:
    out: list[str] = []
    block = seed
    while len(out) < count:
        block = hashlib.sha256(block).digest()
        out.extend(_WORDS[b % len(_WORDS)] for b in block)
    return out[:count]


# Generated text is a slice of one fixed pseudo-random word stream, picked by a CRC of the request:
# deterministic, and cheap enough (a CRC, a slice, a join) that the pipeline ceiling measured with
# this backend is runner's own work rather than the stand-in's.
_STREAM = tuple(_words(b"runner simulated backend", 8192))


def _generate(prompt: str, seed: Any, index: int, cap: int, stop: tuple[str, ...]) -> tuple[str, int, str, Any]:
    """(text, completion tokens, finish_reason, stop_reason) for one choice."""
    h = zlib.crc32(f"{seed}\x1f{index}".encode(), zlib.crc32(prompt.encode()))
    natural = 4 + h % 40
    n = min(cap, natural)
    start = (h >> 8) % (len(_STREAM) - 64)
    text = " ".join(_STREAM[start:start + n])
    finish, stop_reason = ("length" if natural > cap else "stop"), None
    cut = min(((text.find(s), s) for s in stop if s and s in text), default=None) if stop else None
    if cut is not None:
        text, stop_reason, finish = text[: cut[0]], cut[1], "stop"
        n = len(text.split())
    return text, n, finish, stop_reason


def _embedding(text: str, dims: int) -> list[float]:
    d = _digest("embed", text)
    raw = b""
    while len(raw) < dims * 4:
        d = hashlib.sha256(d).digest()
        raw += d
    vals = [(v / 65535.0) * 2.0 - 1.0 for v in struct.unpack(f"<{dims * 2}H", raw[: dims * 4])[:dims]]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]


@dataclass
class _Pending:
    result: LineResult
    tokens: int
    ready_at: float


ENGINE_ARGS = frozenset({"tokens_per_second", "latency_per_line", "dimensions", "max_inflight"})


class SimulatedBackend(Backend):
    """Deterministic stand-in behind the seam: shapes, token counts, stop strings, n, speed."""

    def __init__(self, spec: ModelSpec, settings: Settings | None = None) -> None:
        self.spec = spec
        args = spec.engine_args
        unknown = sorted(set(args) - ENGINE_ARGS)
        if unknown:  # a stand-in that ignored a parameter would pass a test it should fail
            raise ConfigError(f"the simulated backend has no engine_args {', '.join(unknown)} "
                              f"(it takes {', '.join(sorted(ENGINE_ARGS))})")
        self.tokens_per_second = float(args.get("tokens_per_second") or 0)
        self.latency = float(args.get("latency_per_line") or 0)
        self.dimensions = int(args.get("dimensions") or 16)
        self.default_max_inflight = int(args.get("max_inflight") or 256)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._credit = 0.0
        self._last = time.monotonic()
        self._finished_tokens = 0

    # -- the seam ------------------------------------------------------------------------------------
    def add(self, req: LineRequest) -> None:
        result = self._run(req)
        tokens = result.usage.completion_tokens or result.usage.prompt_tokens
        if not self._pending:
            self._last = time.monotonic()  # idle time earns no credit
        self._pending[req.key] = _Pending(result, max(1, tokens), time.monotonic() + self.latency)

    def step(self) -> list[LineResult]:
        if self.tokens_per_second <= 0 and self.latency <= 0:
            done = [p.result for p in self._pending.values()]
            self._finished_tokens += sum(p.tokens for p in self._pending.values())
            self._pending.clear()
            return done
        head = next(iter(self._pending.values()))
        now = time.monotonic()
        wait = max(head.ready_at - now, 0.0)
        if self.tokens_per_second > 0:
            wait = max(wait, (head.tokens - self._credit - (now - self._last) * self.tokens_per_second)
                       / self.tokens_per_second)
        if wait > 0:
            time.sleep(min(wait, _MAX_SLEEP))
        now = time.monotonic()
        if self.tokens_per_second > 0:
            self._credit += (now - self._last) * self.tokens_per_second
        self._last = now
        done: list[LineResult] = []
        for key in list(self._pending):
            p = self._pending[key]
            if p.ready_at > now:
                break
            if self.tokens_per_second > 0:
                if p.tokens > self._credit:
                    break
                self._credit -= p.tokens
            done.append(p.result)
            self._finished_tokens += p.tokens
            del self._pending[key]
        if not self._pending:
            self._credit = 0.0
        return done

    def abort(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._pending.pop(key, None)

    def generated_tokens(self) -> int:
        """Tokens of finished lines, plus the paced credit the line at the head has earned so far."""
        head = next(iter(self._pending.values()), None)
        return self._finished_tokens + (int(min(self._credit, head.tokens)) if head is not None else 0)

    def has_unfinished(self) -> bool:
        return bool(self._pending)

    # -- requests -> bodies (parsing and shapes shared with the transformers backend) ----------------
    def _run(self, req: LineRequest) -> LineResult:
        if req.endpoint not in self.spec.endpoints:
            raise endpoint_mismatch(self.spec.id, req.endpoint, self.spec.endpoints)
        inp = parse_line(req.endpoint, req.body, self.spec)
        rid = hashlib.blake2b(req.key.encode(), digest_size=16).hexdigest()
        body: dict[str, Any]
        if isinstance(inp, EmbeddingInput):
            dims = inp.dimensions or self.dimensions
            texts = [_text(x) for x in inp.inputs]
            tokens = sum(_count(x) for x in inp.inputs)
            body = embedding_body(inp.model, [_embedding(t, dims) for t in texts], tokens,
                                  encoding_format=inp.encoding_format, request_id=f"embd-{rid}")
        elif isinstance(inp, ChatInput):
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in inp.messages)
            tokens = 2 + sum(5 + m["content"].count(" ") for m in inp.messages)  # 4 + its words
            body = chat_completion_body(inp.model, self._choices(prompt, tokens, inp.sampling),
                                        request_id=f"chatcmpl-{rid}")
        else:
            outs = []
            for p in inp.prompts:
                po = self._choices(_text(p), _count(p), inp.sampling)
                outs.append(replace(po, prompt_text=_text(p)) if inp.echo else po)
            body = completion_body(inp.model, outs, request_id=f"cmpl-{rid}")
        return LineResult(req.key, 200, body, usage_of(body))

    def _choices(self, prompt: str, prompt_tokens: int, s: SamplingOptions) -> PromptOutput:
        choices = []
        for i in range(s.n):
            text, n, finish, stop_reason = _generate(prompt, s.seed, i, s.max_tokens, s.stop)
            lps = None
            if s.logprobs is not None:
                lps = tuple(TokenLogprob(w, -0.25, tuple(w.encode()), _top(w, s.logprobs)) for w in _spaced(text))
            choices.append(ChoiceOutput(text, n, finish, stop_reason, lps))
        return PromptOutput(prompt_tokens, tuple(choices))


def _top(token: str, k: int) -> tuple[TopLogprob, ...]:
    """k alternatives, the sampled token first (as vLLM ranks it), each a distinct string."""
    alts = [token if j == 0 else f"{token}~{j}" for j in range(k)]
    return tuple(TopLogprob(t, -0.25 * (j + 1), tuple(t.encode())) for j, t in enumerate(alts))


def _text(p: str | tuple[int, ...]) -> str:
    return p if isinstance(p, str) else " ".join(f"t{t}" for t in p)


def _count(p: str | tuple[int, ...]) -> int:
    return max(1, len(p.split())) if isinstance(p, str) else len(p)


def _spaced(text: str) -> list[str]:
    """The text's tokens (words, each after the first with its leading space), joining back to it."""
    words = text.split(" ") if text else []
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
