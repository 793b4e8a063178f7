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

import base64
import hashlib
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.engine.backend import Backend, LineRequest, LineResult, Usage
from runner.engine.simulated_bodies import chat_prompt, completion_prompts, embedding_inputs, sampling
from runner.errors import LineError
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


def _generate(prompt: str, seed: Any, index: int, cap: int, stop: list[str]) -> tuple[str, int, str, Any]:
    """(text, completion tokens, finish_reason, stop_reason) for one choice."""
    d = _digest(prompt, seed, index)
    natural = 4 + d[0] % 40
    n = min(cap, natural)
    words = _words(d, n)
    text = " ".join(words)
    finish, stop_reason = ("length" if natural > cap else "stop"), None
    cut = min(((text.find(s), s) for s in stop if s and s in text), default=None)
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


class SimulatedBackend(Backend):
    """Deterministic stand-in behind the seam: shapes, token counts, stop strings, n, speed."""

    def __init__(self, spec: ModelSpec, settings: Settings | None = None) -> None:
        self.spec = spec
        args = spec.engine_args
        self.tokens_per_second = float(args.get("tokens_per_second") or 0)
        self.latency = float(args.get("latency_per_line") or 0)
        self.dimensions = int(args.get("dimensions") or 16)
        self.default_max_inflight = int(args.get("max_inflight") or 256)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._credit = 0.0
        self._last = time.monotonic()

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
            del self._pending[key]
        if not self._pending:
            self._credit = 0.0
        return done

    def abort(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._pending.pop(key, None)

    def has_unfinished(self) -> bool:
        return bool(self._pending)

    # -- requests -> bodies --------------------------------------------------------------------------
    def _run(self, req: LineRequest) -> LineResult:
        body = req.body
        if not isinstance(body, dict):
            raise LineError("The request body must be a JSON object.", param="body")
        if req.endpoint not in self.spec.endpoints:
            raise LineError(f"The model {self.spec.id!r} does not serve {req.endpoint}.", param="model",
                            code="model_endpoint_mismatch")
        rid = _digest(req.key).hex()[:24]
        if req.endpoint == "/v1/embeddings":
            return self._embed(req, body, rid)
        if req.endpoint == "/v1/chat/completions":
            return self._chat(req, body, rid)
        return self._complete(req, body, rid)

    def _chat(self, req: LineRequest, body: dict[str, Any], rid: str) -> LineResult:
        prompt, prompt_tokens = chat_prompt(body)
        s = sampling(body, self.spec.max_tokens, chat=True)
        choices, completion = [], 0
        for i in range(s.n):
            text, n, finish, stop_reason = _generate(prompt, s.seed, i, s.max_tokens, s.stop)
            completion += n
            choices.append({
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": None,
                            "audio": None, "function_call": None, "tool_calls": [], "reasoning_content": None},
                "logprobs": _chat_logprobs(text) if s.logprobs is not None else None,
                "finish_reason": finish,
                "stop_reason": stop_reason,
            })
        out = {
            "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.spec.id), "choices": choices, "service_tier": None,
            "system_fingerprint": None, "usage": _usage(prompt_tokens, completion), "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
        return LineResult(req.key, 200, out, Usage(prompt_tokens=prompt_tokens, completion_tokens=completion))

    def _complete(self, req: LineRequest, body: dict[str, Any], rid: str) -> LineResult:
        prompts = completion_prompts(body)
        s = sampling(body, self.spec.max_tokens, chat=False)
        echo = bool(body.get("echo"))
        choices, prompt_total, completion = [], 0, 0
        for p_idx, (text_in, p_tokens) in enumerate(prompts):
            prompt_total += p_tokens
            for j in range(s.n):
                text, n, finish, stop_reason = _generate(text_in, s.seed, j, s.max_tokens, s.stop)
                completion += n
                choices.append({
                    "index": p_idx * s.n + j,
                    "text": (text_in + text) if echo else text,
                    "logprobs": _completion_logprobs(text) if s.logprobs is not None else None,
                    "finish_reason": finish,
                    "stop_reason": stop_reason,
                    "prompt_logprobs": None,
                })
        out = {
            "id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
            "model": body.get("model", self.spec.id), "choices": choices, "service_tier": None,
            "system_fingerprint": None, "usage": _usage(prompt_total, completion), "kv_transfer_params": None,
        }
        return LineResult(req.key, 200, out, Usage(prompt_tokens=prompt_total, completion_tokens=completion))

    def _embed(self, req: LineRequest, body: dict[str, Any], rid: str) -> LineResult:
        inputs = embedding_inputs(body)
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
            raise LineError("'dimensions' must be a positive integer.", param="dimensions")
        dims = dims or self.dimensions
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise LineError("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        data, tokens = [], 0
        for i, (text, n) in enumerate(inputs):
            tokens += n
            vec: Any = _embedding(text, dims)
            if fmt == "base64":
                vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"index": i, "object": "embedding", "embedding": vec})
        out = {
            "id": f"embd-{rid}", "object": "list", "created": int(time.time()),
            "model": body.get("model", self.spec.id), "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                      "prompt_tokens_details": None},
        }
        return LineResult(req.key, 200, out, Usage(prompt_tokens=tokens))


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None}


def _chat_logprobs(text: str) -> dict[str, Any]:
    return {"content": [{"token": w, "logprob": -0.25, "bytes": list(w.encode()), "top_logprobs": []}
                        for w in text.split()]}


def _completion_logprobs(text: str) -> dict[str, Any]:
    words = text.split()
    offsets, pos = [], 0
    for w in words:
        offsets.append(pos)
        pos += len(w) + 1
    return {"text_offset": offsets, "token_logprobs": [-0.25] * len(words), "tokens": words,
            "top_logprobs": [{w: -0.25} for w in words]}
