"""Simulated backend: LineRequests -> deterministic OpenAI-shaped LineResults, no model.

For tests and for measuring the pipeline's own ceiling; never a default. Outputs depend only on the
request (prompt, seed, sampling parameters, choice index), so a line redone after a crash gives the
same answer.

No parameter is ignored silently: FIELDS says, for every field the chat and completions parsers
accept, whether this backend honours it, refuses it (400 unsupported_parameter) or finds it inert
(it changes nothing a model-less stand-in produces). Honoured, beyond lengths and n:
- sampling (temperature, top_p, top_k, min_p, the penalties) picks the sample: another setting,
  another deterministic text; temperature 0 or top_k 1 is greedy (the seed is ignored, as it is by
  vLLM, and all n choices are the same);
- stop (+ include_stop_str_in_output), min_tokens (no stop before it), ignore_eos (runs to max_tokens);
- response_format json_object / json_schema: a deterministic schema-valid instance
  (schema_instance.py), refused with the keyword it cannot honour;
- tools with tool_choice "required" or a named function: one call whose arguments are valid for the
  function's parameters, finish_reason "tool_calls" (required) or "stop" (named), as vLLM builds them;
  tool_choice "auto" (the default with tools) and "none" answer in plain text, which a model may do.
Structured output and tool calls are counted in 4-character tokens; when max_tokens or a stop
string cuts one, the cut text is the content and there is no tool call, as from a real model.

engine_args (models.yaml):
- tokens_per_second: aggregate output-token rate across all lines (absent or 0 = as fast as possible).
- latency_per_line: seconds each line waits at least before it can finish (default 0).
- dimensions: embedding size when a request gives none (default 16).
- max_inflight: the engine's in-flight window for this model (default 256).
- prefix_cache_tokens: a prefix cache of this many tokens (absent or 0 = none), modelled on vLLM's:
  whole blocks of 16 prompt tokens (the tokens this backend counts: a chat message is its role and
  markers plus its words) keyed by a chained hash, looked up when a line is added (the leading
  blocks found are its usage.prompt_tokens_details.cached_tokens; at least one prompt token is
  always computed, as on vLLM), then stored, least recently used evicted first. Without it
  cached_tokens is 0. Embeddings are not cached.
- prefill_tokens_per_second: the rate the uncached prompt tokens are processed at (absent or 0 =
  free). Prompt and output work share one device: a line costs uncached / prefill_tokens_per_second
  plus its output tokens / tokens_per_second seconds, so cache hits make a batch finish sooner.
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

import orjson

from runner.engine import schema_instance
from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.bodies import (
    ChatInput,
    CompletionInput,
    EmbeddingInput,
    SamplingOptions,
    check_supported,
    parse_line,
)
from runner.engine.responses import (
    ChoiceOutput,
    PromptOutput,
    TokenLogprob,
    ToolCallOutput,
    TopLogprob,
    chat_completion_body,
    completion_body,
    embedding_body,
    usage_of,
)
from runner.errors import ConfigError, LineError, clip, endpoint_mismatch
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


# Every field parse_chat / parse_completion accept, and what this backend does with it. A test
# (tests/engine/test_simulated_params.py) sets each away from its default and checks the answer:
# honoured changes the output, refused is a 400 unsupported_parameter, inert changes nothing.
HONOURED, REFUSED, INERT = "honoured", "refused", "inert"
FIELDS: dict[str, str] = {
    **dict.fromkeys((
        "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n", "seed",
        "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "stop", "include_stop_str_in_output", "ignore_eos", "min_tokens", "logprobs",
        "top_logprobs", "response_format", "tools", "tool_choice", "echo",  # echo: completions (chat refuses)
        "add_generation_prompt", "continue_final_message",
    ), HONOURED),
    **dict.fromkeys((
        "stop_token_ids", "logit_bias", "bad_words", "allowed_token_ids", "prompt_logprobs",  # no token ids
        "return_token_ids", "return_tokens_as_token_ids", "truncate_prompt_tokens",
        "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
        "use_beam_search", "length_penalty", "functions", "function_call", "audio", "modalities",
        "web_search_options", "verbosity", "documents", "vllm_xargs", "chat_template", "suffix",
        "prompt_embeds", "stream", "best_of",  # the parser refuses stream: true and best_of != n
    ), REFUSED),
    **dict.fromkeys((
        "user", "metadata", "store", "service_tier", "stream_options", "priority", "request_id",
        "cache_salt", "prompt_cache_key", "safety_identifier", "kv_transfer_params", "prediction",
        "parallel_tool_calls",  # a choice makes one call at most: valid whether parallel calls are allowed
        # no special tokens, template, images or reasoning in a stand-in's text
        "skip_special_tokens", "spaces_between_special_tokens", "add_special_tokens", "chat_template_kwargs",
        "mm_processor_kwargs", "include_reasoning", "reasoning_effort",
    ), INERT),
}
# bodies.NEUTRAL keys honoured (check_supported refuses the other ones when set)
SUPPORTED = frozenset({
    "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "stop", "logprobs", "ignore_eos", "min_tokens", "response_format", "n", "tools",
    "echo", "include_stop_str_in_output", "skip_special_tokens", "continue_final_message",
})
# Refused fields the parsers keep no value for: refused here from the body when set.
_BODY_REFUSED = frozenset({"return_token_ids", "return_tokens_as_token_ids", "functions", "function_call",
                           "audio", "modalities", "web_search_options", "verbosity", "documents", "vllm_xargs"})
_DEFAULT_SAMPLING = (1.0, 1.0, 0, 0.0, 0.0, 0.0, 1.0)


def _unsupported(message: str, param: str) -> LineError:
    return LineError(message, status=400, code="unsupported_parameter", param=param)


def _check_body(body: dict[str, Any]) -> None:
    for key in body.keys() & _BODY_REFUSED:
        value = body[key]
        # absent in effect: null, false, no functions, no extra args, text only (an empty
        # web_search_options still turns search on, so it is refused)
        if value is None or value is False or value == [] or (key == "vllm_xargs" and value == {}) or (
                key == "modalities" and value == ["text"]):
            continue
        raise _unsupported(f"'{key}' is not supported by the simulated backend.", key)


def _salt(s: SamplingOptions) -> str | None:
    """The sampling parameters' part of a sample's key: None for greedy (seed and index do not
    matter), "" for the defaults (so default answers stay what they always were)."""
    if s.temperature == 0.0 or s.top_k == 1:
        return None
    params = (s.temperature, s.top_p, s.top_k, s.min_p, s.presence_penalty, s.frequency_penalty,
              s.repetition_penalty)
    return "" if params == _DEFAULT_SAMPLING else f"\x1f{params}"


def _sample_key(salt: str | None, s: SamplingOptions, index: int) -> str:
    """What picks a choice's sample besides the prompt."""
    return "greedy" if salt is None else f"{s.seed}\x1f{index}{salt}"


def _words_from(start: int, n: int) -> tuple[str, ...]:
    words = _STREAM[start:start + n]
    while len(words) < n:  # ignore_eos / min_tokens past the stream's end: wrap around
        words += _STREAM[: n - len(words)]
    return words


def _cut(text: str, s: SamplingOptions, floor: int = 0) -> tuple[str, str] | None:
    """(text up to the first stop string that ends past char `floor`, that stop string), or None."""
    best: tuple[int, str] | None = None
    for st in s.stop:
        i = text.find(st, max(0, floor - len(st) + 1))
        if i >= 0 and (best is None or i < best[0]):
            best = (i, st)
    if best is None:
        return None
    end = best[0] + (len(best[1]) if s.include_stop_str_in_output else 0)
    return text[:end], best[1]


def _generate(prompt: str, key: str, s: SamplingOptions) -> tuple[str, int, str, Any]:
    """(text, completion tokens, finish_reason, stop_reason) for one choice."""
    h = zlib.crc32(key.encode(), zlib.crc32(prompt.encode()))
    cap = s.max_tokens
    natural = cap if s.ignore_eos else max(4 + h % 40, s.min_tokens)
    n = min(cap, natural)
    start = (h >> 8) % (len(_STREAM) - 64)
    words = _STREAM[start:start + n] if n <= 64 else _words_from(start, n)
    text = " ".join(words)
    finish, stop_reason = ("length" if natural > cap or s.ignore_eos else "stop"), None
    if s.stop:
        # min_tokens: no stop string is looked for before that many tokens (as vLLM's detokenizer)
        cut = _cut(text, s, len(" ".join(words[: s.min_tokens])) if s.min_tokens else 0)
        if cut is not None:
            text, stop_reason = cut
            finish = "stop"
            n = max(len(text.split()), min(s.min_tokens, n))
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
    tokens: int  # output tokens
    ready_at: float
    cost: float  # seconds of the paced device: output tokens, plus uncached prompt tokens


ENGINE_ARGS = frozenset({"tokens_per_second", "latency_per_line", "dimensions", "max_inflight",
                         "prefix_cache_tokens", "prefill_tokens_per_second"})
CACHE_BLOCK = 16  # tokens per prefix-cache block, as vLLM's default block_size


class PrefixCache:
    """An LRU of whole prompt blocks keyed by a chained hash (a block's key covers every token
    before it), as vLLM's automatic prefix caching keys them."""

    def __init__(self, tokens: int) -> None:
        self.capacity = tokens // CACHE_BLOCK  # blocks
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def admit(self, tokens: tuple[Any, ...] | list[Any]) -> int:
        """Tokens of this prompt found cached (its leading whole blocks); then its blocks are stored
        as the most recently used."""
        h, hits, hitting = 0, 0, True
        blocks = self.blocks
        for start in range(0, len(tokens) - CACHE_BLOCK + 1, CACHE_BLOCK):
            h = hash((h, tuple(tokens[start:start + CACHE_BLOCK])))
            if h in blocks:
                blocks.move_to_end(h)
                hits += hitting
            else:
                hitting = False
                blocks[h] = None
                if len(blocks) > self.capacity:
                    blocks.popitem(last=False)
        cached = hits * CACHE_BLOCK
        # the last prompt token is always computed (its logits start the answer): a prompt found
        # whole gives back its last block, as vLLM does
        return cached - CACHE_BLOCK if cached and cached >= len(tokens) else cached


def _chat_tokens(messages: Iterable[dict[str, Any]]) -> list[str]:
    """The prompt tokens of a chat as this backend counts them: 2 + per message 4 markers and its
    words (content.count(" ") + 1)."""
    out = ["<|bos|>"]
    for m in messages:
        out += ("<|start|>", m["role"], "<|sep|>")
        out += m["content"].split(" ")
        out.append("<|end|>")
    out.append("<|assistant|>")
    return out


def _prompt_tokens(p: str | tuple[int, ...]) -> list[str] | tuple[int, ...]:
    return p if isinstance(p, tuple) else (p.split() or [""])


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
        cache_tokens = int(args.get("prefix_cache_tokens") or 0)
        self.prefill_tps = float(args.get("prefill_tokens_per_second") or 0)
        if cache_tokens < 0 or self.prefill_tps < 0:
            raise ConfigError("the simulated backend's prefix_cache_tokens and prefill_tokens_per_second must be >= 0")
        self.cache = PrefixCache(cache_tokens) if cache_tokens else None
        self._paced = self.tokens_per_second > 0 or self.prefill_tps > 0
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._credit = 0.0
        self._last = time.monotonic()
        self._finished_tokens = 0
        self._schemas: dict[int, tuple[Any, Any, LineError | None]] = {}
        self._plans: dict[int, tuple[SamplingOptions, str | None]] = {}

    # -- the seam ------------------------------------------------------------------------------------
    def add(self, req: LineRequest) -> None:
        result = self._run(req)
        usage = result.usage
        tokens = max(1, usage.completion_tokens or usage.prompt_tokens)
        cost = tokens / self.tokens_per_second if self.tokens_per_second > 0 else 0.0
        if self.prefill_tps > 0:
            cost += (usage.prompt_tokens - usage.cached_tokens) / self.prefill_tps
        if not self._pending:
            self._last = time.monotonic()  # idle time earns no credit
        self._pending[req.key] = _Pending(result, tokens, time.monotonic() + self.latency, cost)

    def step(self) -> list[LineResult]:
        if not self._paced and self.latency <= 0:
            done = [p.result for p in self._pending.values()]
            self._finished_tokens += sum(p.tokens for p in self._pending.values())
            self._pending.clear()
            return done
        # The paced device does one line's work after another (credit: seconds of work earned)
        head = next(iter(self._pending.values()))
        now = time.monotonic()
        wait = max(head.ready_at - now, 0.0)
        if self._paced:
            wait = max(wait, head.cost - self._credit - (now - self._last))
        if wait > 0:
            time.sleep(min(wait, _MAX_SLEEP))
        now = time.monotonic()
        if self._paced:
            self._credit += now - self._last
        self._last = now
        done: list[LineResult] = []
        for key in list(self._pending):
            p = self._pending[key]
            if p.ready_at > now:
                break
            if self._paced:
                if p.cost > self._credit:
                    break
                self._credit -= p.cost
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
        """Tokens of finished lines, plus the share of the head line's tokens its credit has earned."""
        head = next(iter(self._pending.values()), None)
        if head is None or head.cost <= 0:
            return self._finished_tokens
        return self._finished_tokens + int(head.tokens * min(1.0, self._credit / head.cost))

    def has_unfinished(self) -> bool:
        return bool(self._pending)

    # -- requests -> bodies (parsing and shapes shared with the transformers backend) ----------------
    def _run(self, req: LineRequest) -> LineResult:
        if req.endpoint not in self.spec.endpoints:
            raise endpoint_mismatch(self.spec.id, req.endpoint, self.spec.endpoints)
        inp = parse_line(req.endpoint, req.body, self.spec)
        salt = None
        if not isinstance(inp, EmbeddingInput):
            salt = self._plan(inp)
            if not _BODY_REFUSED.isdisjoint(req.body):
                _check_body(req.body)
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
            # how the prompt ends changes the answer, as the template's ending does for a model
            if inp.continue_final_message:
                prompt += "\x1fcontinue"
            elif not inp.add_generation_prompt:
                prompt += "\x1fno generation prompt"
            if inp.sampling.response_format is not None or inp.tool_choice in ("required", "function"):
                po = self._structured(inp, prompt, tokens, rid, salt)
            else:
                po = self._choices(prompt, tokens, inp.sampling, salt)
            if self.cache is not None:
                po = replace(po, cached_tokens=self.cache.admit(_chat_tokens(inp.messages)))
            body = chat_completion_body(inp.model, po, request_id=f"chatcmpl-{rid}")
        else:
            outs = []
            for p in inp.prompts:
                po = self._choices(_text(p), _count(p), inp.sampling, salt)
                if self.cache is not None:
                    po = replace(po, cached_tokens=self.cache.admit(_prompt_tokens(p)))
                outs.append(replace(po, prompt_text=_text(p)) if inp.echo else po)
            body = completion_body(inp.model, outs, request_id=f"cmpl-{rid}")
        return LineResult(req.key, 200, body, usage_of(body))

    def _plan(self, inp: ChatInput | CompletionInput) -> str | None:
        """check_supported, and the sample's salt, once per SamplingOptions object (lines with the
        same parameters share one: bodies.py caches them). The check depends on the sampling
        options alone here, because the other keys it reads (tools, echo, continue_final_message)
        are all honoured."""
        s = inp.sampling
        hit = self._plans.get(id(s))
        if hit is not None and hit[0] is s:  # holding s keeps its id from being reused
            return hit[1]
        check_supported(inp, SUPPORTED, "simulated")
        if len(self._plans) >= 256:
            self._plans.clear()
        salt = _salt(s)
        self._plans[id(s)] = (s, salt)
        return salt

    def _choices(self, prompt: str, prompt_tokens: int, s: SamplingOptions, salt: str | None) -> PromptOutput:
        choices = []
        for i in range(s.n):
            text, n, finish, stop_reason = _generate(prompt, _sample_key(salt, s, i), s)
            lps = None
            if s.logprobs is not None:
                lps = tuple(TokenLogprob(w, -0.25, tuple(w.encode()), _top(w, s.logprobs)) for w in _spaced(text))
            choices.append(ChoiceOutput(text, n, finish, stop_reason, lps))
        return PromptOutput(prompt_tokens, tuple(choices))

    # -- structured output and tool calls ------------------------------------------------------------
    def _structured(self, inp: ChatInput, prompt: str, prompt_tokens: int, rid: str,
                    salt: str | None) -> PromptOutput:
        s = inp.sampling
        forced = inp.tool_choice in ("required", "function")
        what = "a forced tool call" if forced else "structured output"
        # the answer is one JSON value that ends where it is complete: it cannot be run on past
        # its end (ignore_eos) or padded to a length (min_tokens)
        if s.ignore_eos:
            raise _unsupported(f"'ignore_eos' cannot be combined with {what} on the simulated backend.",
                               "ignore_eos")
        if s.min_tokens:
            raise _unsupported(f"'min_tokens' cannot be combined with {what} on the simulated backend.",
                               "min_tokens")
        if forced and s.response_format is not None:
            raise _unsupported("'response_format' cannot be combined with a tool_choice that forces a call.",
                               "response_format")
        functions = _functions(inp.tools or ()) if forced else []
        if inp.tool_choice == "function":
            functions = [f for f in functions if f[0] == inp.forced_function]
        schema = None if forced else self._schema(s.response_format)
        choices = []
        for i in range(s.n):
            seed = zlib.crc32(_sample_key(salt, s, i).encode(), zlib.crc32(prompt.encode()))
            calls = None
            if forced:
                j = seed % len(functions)
                name, params = functions[j]
                args = _build(params, seed, f"tools[{j}].function.parameters")
                if not isinstance(args, dict):
                    raise LineError(f"'tools[{j}].function.parameters' must describe an object.", status=400,
                                    code="invalid_value", param="tools")
                arguments = orjson.dumps(args).decode()
                # vLLM's required path generates [{"name", "parameters"}]; a named one the arguments
                text = arguments if inp.tool_choice == "function" else orjson.dumps(
                    [{"name": name, "parameters": args}]).decode()
                call_id = "chatcmpl-tool-" + hashlib.blake2b(f"{rid}:{i}".encode(), digest_size=16).hexdigest()
                calls = (ToolCallOutput(call_id, name, arguments),)
            elif schema is None:  # json_object
                text = orjson.dumps({"answer": " ".join(_words_from(seed % (len(_STREAM) - 64), 2 + seed % 6))
                                     }).decode()
            else:
                text = orjson.dumps(_build(schema, seed, "response_format.json_schema.schema")).decode()
            # OpenAI and vLLM: "tool_calls" for required, "stop" for a named function
            choices.append(_json_choice(text, s, calls, "tool_calls" if inp.tool_choice == "required" else "stop"))
        return PromptOutput(prompt_tokens, tuple(choices))

    def _schema(self, rf: dict[str, Any]) -> Any:
        """The checked schema of a json_schema response_format (None: json_object), cached per object
        (the parsed sampling options, and so this dict, are shared by the lines of a batch)."""
        kind = rf.get("type")
        if kind == "json_object":
            return None
        if kind != "json_schema":
            raise _unsupported(f"response_format type {clip(kind, quote=True)} is not supported by the simulated "
                               "backend (json_object and json_schema are).", "response_format")
        hit = self._schemas.get(id(rf))
        if hit is None or hit[0] is not rf:
            js = rf.get("json_schema")
            schema: Any = js.get("schema", {"type": "object"}) if isinstance(js, dict) else None
            error = None
            if schema is None:
                error = LineError("'response_format.json_schema' must be an object with a 'schema'.", status=400,
                                  code="invalid_value", param="response_format")
            else:
                try:
                    _check(schema, "response_format.json_schema.schema")
                except LineError as e:
                    error = e
            if len(self._schemas) >= 64:
                self._schemas.clear()
            hit = self._schemas[id(rf)] = (rf, schema, error)
        if hit[2] is not None:
            raise hit[2]
        return hit[1]


def _schema_error(e: schema_instance.SchemaError, where: str) -> LineError:
    code = "unsupported_parameter" if e.unsupported else "invalid_value"
    return LineError(f"'{where}': {e.reason} (keyword '{e.keyword}' at '{e.path}').", status=400, code=code,
                     param=where.split(".", 1)[0].split("[", 1)[0])


# A malformed schema (a string where a list belongs, ...) may fail deep inside; it is the client's
# schema, so a 400, never a 500.
_MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError)


def _check(schema: Any, where: str) -> None:
    try:
        schema_instance.check(schema)
    except schema_instance.SchemaError as e:
        raise _schema_error(e, where) from None
    except _MALFORMED:
        raise LineError(f"'{where}' is not a JSON schema this backend can read.", status=400, code="invalid_value",
                        param=where.split(".", 1)[0].split("[", 1)[0]) from None


def _build(schema: Any, seed: int, where: str) -> Any:
    try:
        return schema_instance.instance(schema, seed)
    except schema_instance.SchemaError as e:
        raise _schema_error(e, where) from None
    except _MALFORMED:
        raise LineError(f"'{where}' is not a JSON schema this backend can read.", status=400, code="invalid_value",
                        param=where.split(".", 1)[0].split("[", 1)[0]) from None


_NO_PARAMETERS = {"type": "object", "properties": {}}


def _functions(tools: Iterable[Any]) -> list[tuple[str, Any]]:
    """(name, parameters schema) of each tool, checked."""
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise LineError(f"'tools[{i}]' must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}.",
                            status=400, code="invalid_value", param="tools")
        params = fn.get("parameters")
        params = _NO_PARAMETERS if params is None else params
        _check(params, f"tools[{i}].function.parameters")
        out.append((fn["name"], params))
    return out


def _json_choice(text: str, s: SamplingOptions, calls: tuple[ToolCallOutput, ...] | None,
                 call_finish: str) -> ChoiceOutput:
    """A choice whose generated text is `text` (JSON, in 4-character tokens), cut by max_tokens and stop
    strings as generation would be; a cut tool call is no call, its text the content."""
    n = (len(text) + 3) // 4
    finish, stop_reason = "stop", None
    if n > s.max_tokens:
        text, n, finish, calls = text[: 4 * s.max_tokens], s.max_tokens, "length", None
    if s.stop:
        cut = _cut(text, s)
        if cut is not None:
            text, stop_reason = cut
            n, finish, calls = (len(text) + 3) // 4, "stop", None
    lps = None
    if s.logprobs is not None:
        chunks = [text[k:k + 4] for k in range(0, len(text), 4)]
        lps = tuple(TokenLogprob(w, -0.25, tuple(w.encode()), _top(w, s.logprobs)) for w in chunks)
    if calls:
        return ChoiceOutput("", n, call_finish, None, lps, tool_calls=calls)
    return ChoiceOutput(text, n, finish, stop_reason, lps)


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
