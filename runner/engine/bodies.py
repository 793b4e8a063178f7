"""Bodies: an OpenAI request body -> ChatInput / CompletionInput / EmbeddingInput (LineError if bad).

Pure Python (no torch): the transformers and simulated backends share it; the vLLM backend uses
vLLM's own request models instead.

Unknown fields. OpenAI answers a body with an argument it does not know with 400 "Unrecognized
request argument supplied: X". We do the same, because a batch user never sees a warning: a
misspelt `max_token` or `temprature` silently ignored would run a whole batch with settings
nobody asked for. Every field of OpenAI's request (including those that do not change the output,
like `user`, `metadata`, `store`) and vLLM's documented sampling extras (`top_k`, `min_p`,
`repetition_penalty`, `ignore_eos`, `min_tokens`, `stop_token_ids`, …) is recognised, so bodies
written for either server pass. A recognised parameter that the backend cannot honour is
rejected by that backend with `check_supported()`: 400, code `unsupported_parameter`, naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from runner.engine.content_parts import MEDIA_PARTS, no_vision
from runner.errors import LineError, clip
from runner.model_specs import ModelSpec

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"

MAX_N = 128  # OpenAI's limit
MAX_STOP = 4
MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit; vLLM's default max_logprobs
MAX_TOKENS_LIMIT = 10_000_000  # anything above is a mistake, whatever the context
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for /v1/completions
ROLES = ("system", "developer", "user", "assistant", "tool")

# Fields common to both generation endpoints, parsed into SamplingOptions.
_SAMPLING_FIELDS = {
    "max_tokens", "temperature", "top_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
    "logprobs", "logit_bias", "response_format", "stream", "stream_options", "user", "metadata",
    "store", "service_tier", "best_of",
    # vLLM extras
    "top_k", "min_p", "repetition_penalty", "ignore_eos", "min_tokens", "stop_token_ids",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "length_penalty", "use_beam_search", "truncate_prompt_tokens", "prompt_logprobs",
    "allowed_token_ids", "bad_words", "structured_outputs", "guided_json", "guided_regex",
    "guided_choice", "guided_grammar", "priority", "request_id", "add_special_tokens",
    "return_tokens_as_token_ids", "return_token_ids", "cache_salt", "kv_transfer_params",
    "vllm_xargs",
}
_CHAT_FIELDS = _SAMPLING_FIELDS | {
    "model", "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "modalities", "audio", "prediction",
    "reasoning_effort", "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
    # vLLM extras
    "chat_template", "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
    "echo", "documents", "mm_processor_kwargs", "include_reasoning",
}
_COMPLETION_FIELDS = _SAMPLING_FIELDS | {"model", "prompt", "echo", "suffix", "prompt_embeds"}
_EMBEDDING_FIELDS = {
    "model", "input", "encoding_format", "dimensions", "user",
    # vLLM extras
    "truncate_prompt_tokens", "add_special_tokens", "priority", "request_id", "normalize",
    "use_activation", "embed_dtype", "endianness", "messages",
}

# Parameters whose neutral value means "not used"; a backend lists those it honours.
NEUTRAL: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0,
    "stop": (), "stop_token_ids": (), "logprobs": None, "ignore_eos": False, "min_tokens": 0,
    "logit_bias": None, "response_format": None, "n": 1, "tools": None, "echo": False,
    "prompt_logprobs": None, "bad_words": None, "allowed_token_ids": None, "structured_outputs": None,
    "use_beam_search": False, "truncate_prompt_tokens": None, "include_stop_str_in_output": False,
    "skip_special_tokens": True, "continue_final_message": False,
}


# Per-line value types are plain slotted dataclasses, not frozen ones: a frozen __init__ sets each
# field through object.__setattr__, ~2 us per SamplingOptions, paid on every line of every batch.
@dataclass(slots=True)
class SamplingOptions:
    """Normalised generation parameters of one line (shared by every prompt and choice of it)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (vLLM's -1 is mapped to 0)
    min_p: float = 0.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: no logprobs; k: the sampled token plus k alternatives
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    response_format: dict[str, Any] | None = None
    max_tokens_given: bool = False  # False: max_tokens is the model's default cap
    extras: dict[str, Any] = field(default_factory=dict)  # other vLLM extras given (bad_words, …)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(slots=True)
class ChatInput:
    """A /v1/chat/completions line: the messages to render with the chat template."""

    model: str
    messages: tuple[dict[str, str], ...]
    sampling: SamplingOptions
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    tools: tuple[dict[str, Any], ...] | None = None
    # None (no tools: OpenAI's and vLLM's default is then "none", with tools "auto"), "none", "auto",
    # "required", or the name of the function a {"type": "function", ...} choice names
    tool_choice: str | None = None
    forced_function: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CompletionInput:
    """A /v1/completions line: each prompt (text or token ids) is its own sub-request."""

    model: str
    prompts: tuple[str | tuple[int, ...], ...]
    sampling: SamplingOptions
    echo: bool = False


@dataclass(slots=True)
class EmbeddingInput:
    """A /v1/embeddings line: each input (text or token ids) gets one vector."""

    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    encoding_format: str = "float"
    dimensions: int | None = None
    truncate_prompt_tokens: int | None = None


LineInput = ChatInput | CompletionInput | EmbeddingInput


# The default is for a wrong type as much as a value out of range: runner has one code for a bad
# value (OpenAI's invalid_type is folded into invalid_value, see runner/error_codes.py).
def _bad(message: str, param: str | None, code: str = "invalid_value") -> LineError:
    return LineError(message, status=400, code=code, param=param)


# -- scalar checks ----------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _int(body: dict[str, Any], key: str, lo: int | None = None, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not _is_int(v):
        raise _bad(f"'{key}' must be an integer, got {clip(v, quote=True)}.", key)
    if lo is not None and v < lo:
        raise _bad(f"'{key}' must be >= {lo}, got {v}.", key)
    if hi is not None and v > hi:
        raise _bad(f"'{key}' must be <= {hi}, got {v}.", key)
    return int(v)


def _float(body: dict[str, Any], key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if not _is_num(v):
        raise _bad(f"'{key}' must be a number, got {clip(v, quote=True)}.", key)
    if v < lo or (lo_open and v == lo) or v > hi:
        left = "(" if lo_open else "["
        raise _bad(f"'{key}' must be in {left}{lo}, {hi}], got {v}.", key)
    return float(v)


def _bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise _bad(f"'{key}' must be a boolean, got {clip(v, quote=True)}.", key)
    return v


def _token_ids(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(t) and t >= 0 for t in v)


# -- shared parts -----------------------------------------------------------------------------------


def _check_fields(body: Any, allowed: set[str]) -> None:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None, "invalid_body")
    if body.keys() <= allowed:
        return
    unknown = sorted(body.keys() - allowed)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {clip(unknown[0])}", clip(unknown[0]),
                   "unknown_parameter")


def _model(body: dict[str, Any], spec: ModelSpec) -> str:
    model = body.get("model", spec.id)
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string.", "model")
    return model


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _bad("'stop' must be a string or a list of strings.", "stop")
    if len(items) > MAX_STOP:
        raise _bad(f"'stop' takes at most {MAX_STOP} sequences, got {len(items)}.", "stop")
    if any(s == "" for s in items):
        raise _bad("'stop' sequences must not be empty.", "stop")
    return tuple(dict.fromkeys(items))


# Lines of one batch nearly always share their parameters, so the parsed SamplingOptions is kept
# per distinct parameter set (the body minus its content), skipping ~30 checks per line. Shared
# instances are never mutated. Bounded: cleared when full.
_CONTENT_FIELDS = frozenset({"model", "messages", "prompt", "input"})
_SAMPLING_CACHE: dict[tuple[bool, int, bytes], SamplingOptions] = {}
_SAMPLING_CACHE_SIZE = 256


def _sampling(body: dict[str, Any], spec: ModelSpec, *, chat: bool) -> SamplingOptions:
    try:
        params = orjson.dumps({k: v for k, v in body.items() if k not in _CONTENT_FIELDS})
    except TypeError:  # not JSON (a body built in Python): no caching
        return _parse_sampling(body, spec, chat=chat)
    key = (chat, spec.max_tokens, params)
    hit = _SAMPLING_CACHE.get(key)
    if hit is None:
        hit = _parse_sampling(body, spec, chat=chat)
        if len(_SAMPLING_CACHE) >= _SAMPLING_CACHE_SIZE:
            _SAMPLING_CACHE.clear()
        _SAMPLING_CACHE[key] = hit
    return hit


def _parse_sampling(body: dict[str, Any], spec: ModelSpec, *, chat: bool) -> SamplingOptions:
    # max tokens: chat prefers max_completion_tokens; absent -> the model's cap from models.yaml
    mct = _int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT) if chat else None
    mt = _int(body, "max_tokens", 1 if chat else 0, MAX_TOKENS_LIMIT)
    given = mct if mct is not None else mt
    if given is None:
        max_tokens = spec.max_tokens if chat else min(COMPLETIONS_DEFAULT_MAX_TOKENS, spec.max_tokens)
    else:
        max_tokens = given

    if _bool(body, "stream"):
        raise _bad("'stream' is not supported in a batch; remove it or set it to false.", "stream")
    n = _int(body, "n", 1, MAX_N)
    best_of = _int(body, "best_of", 1, MAX_N)
    if best_of is not None and best_of != (n or 1):
        raise _bad("'best_of' different from 'n' is not supported.", "best_of", "unsupported_parameter")
    if _bool(body, "use_beam_search"):
        raise _bad("Beam search is not supported.", "use_beam_search", "unsupported_parameter")

    temperature = _float(body, "temperature", 0.0, 2.0)
    top_p = _float(body, "top_p", 0.0, 1.0, lo_open=True)
    top_k = _int(body, "top_k", -1)
    if top_k == -1:
        top_k = 0
    min_p = _float(body, "min_p", 0.0, 1.0)
    presence = _float(body, "presence_penalty", -2.0, 2.0)
    frequency = _float(body, "frequency_penalty", -2.0, 2.0)
    repetition = _float(body, "repetition_penalty", 0.0, 2.0, lo_open=True)
    seed = _int(body, "seed", -(2**63), 2**63 - 1)
    min_tokens = _int(body, "min_tokens", 0, MAX_TOKENS_LIMIT) or 0
    if min_tokens > max_tokens:
        raise _bad(f"'min_tokens' ({min_tokens}) must be <= max tokens ({max_tokens}).", "min_tokens")

    logprobs: int | None
    if chat:
        want = _bool(body, "logprobs")
        top = _int(body, "top_logprobs", 0, MAX_LOGPROBS)
        if top is not None and not want:
            raise _bad("'top_logprobs' needs 'logprobs' set to true.", "top_logprobs")
        logprobs = (top or 0) if want else None
    else:
        logprobs = _int(body, "logprobs", 0, MAX_LOGPROBS)

    stop_token_ids = body.get("stop_token_ids")
    if stop_token_ids is not None and not (isinstance(stop_token_ids, list) and all(
            _is_int(t) and t >= 0 for t in stop_token_ids)):
        raise _bad("'stop_token_ids' must be a list of token ids.", "stop_token_ids")

    logit_bias = body.get("logit_bias")
    bias: dict[int, float] | None = None
    if logit_bias is not None:
        if not isinstance(logit_bias, dict):
            raise _bad("'logit_bias' must be an object of token id -> bias.", "logit_bias")
        bias = {}
        for k, v in logit_bias.items():
            try:
                tid = int(k)
            except (TypeError, ValueError):
                raise _bad(f"'logit_bias' key {clip(k, quote=True)} is not a token id.", "logit_bias") from None
            if not _is_num(v) or not -100 <= v <= 100:
                raise _bad(f"'logit_bias' values must be in [-100, 100], got {clip(v, quote=True)}.", "logit_bias")
            bias[tid] = float(v)
        bias = bias or None

    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or response_format.get("type") not in (
                "text", "json_object", "json_schema", "structural_tag"):
            raise _bad("'response_format' must be an object with type text, json_object or json_schema.",
                       "response_format")
        if response_format.get("type") == "text":
            response_format = None

    ignore_eos = _bool(body, "ignore_eos")
    include_stop = _bool(body, "include_stop_str_in_output")
    skip_special = _bool(body, "skip_special_tokens")
    extras = {k: body[k] for k in ("bad_words", "allowed_token_ids", "structured_outputs", "guided_json",
                                    "guided_regex", "guided_choice", "guided_grammar", "prompt_logprobs",
                                    "truncate_prompt_tokens", "length_penalty")
              if body.get(k) is not None}
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=top_k or 0,
        min_p=min_p or 0.0,
        n=n or 1,
        stop=_stop(body),
        stop_token_ids=tuple(stop_token_ids or ()),
        seed=seed,
        presence_penalty=presence or 0.0,
        frequency_penalty=frequency or 0.0,
        repetition_penalty=1.0 if repetition is None else repetition,
        logprobs=logprobs,
        ignore_eos=bool(ignore_eos),
        min_tokens=min_tokens,
        include_stop_str_in_output=bool(include_stop),
        skip_special_tokens=True if skip_special is None else skip_special,
        logit_bias=bias,
        response_format=response_format,
        max_tokens_given=given is not None,
        extras=extras,
    )


# -- per endpoint -----------------------------------------------------------------------------------


def _message(i: int, m: Any, spec_id: str) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(f"'{where}' must be an object with 'role' and 'content'.", where)
    role = m.get("role")
    if role not in ROLES:
        raise _bad(f"'{where}.role' must be one of {', '.join(ROLES)}, got {clip(role, quote=True)}.", f"{where}.role")
    if m.get("tool_calls") or m.get("function_call"):
        raise _bad(f"'{where}': tool calls in messages are not supported.", f"{where}.tool_calls",
                   "unsupported_parameter")
    content = m.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"'{pw}' must be an object with a 'type'.", pw)
            if part["type"] in MEDIA_PARTS:  # the text-only backends: the model has no vision
                raise no_vision(spec_id, f"{pw}.type", part["type"])
            if part["type"] != "text":
                raise _bad(f"'{pw}': content type {clip(part['type'], quote=True)} is not supported (text only).",
                           f"{pw}.type", "unsupported_parameter")
            if not isinstance(part.get("text"), str):
                raise _bad(f"'{pw}.text' must be a string.", f"{pw}.text")
            texts.append(part["text"])
        text = "\n".join(texts)  # as vLLM does for templates that take string content
    elif content is None and role == "assistant":
        text = ""
    else:
        raise _bad(f"'{where}.content' must be a string or a list of text parts.", f"{where}.content")
    out = {"role": "system" if role == "developer" else role, "content": text}
    name = m.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise _bad(f"'{where}.name' must be a string.", f"{where}.name")
        out["name"] = name
    return out


def _tool_choice(value: Any, tools: list[Any] | None) -> tuple[str | None, str | None]:
    """(tool_choice, forced function name), checked as vLLM's ChatCompletionRequest checks it."""
    if value is None:
        return ("auto" if tools else None), None
    if value == "none":
        return "none", None
    if tools is None:
        raise _bad("'tool_choice' needs 'tools'.", "tool_choice")
    if value in ("auto", "required"):
        return value, None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if isinstance(name, str) and name:
            names = {t["function"].get("name") for t in tools
                     if isinstance(t, dict) and isinstance(t.get("function"), dict)}
            if name not in names:
                raise _bad(f"'tool_choice' names function {clip(name, quote=True)}, which is not among 'tools'.",
                           "tool_choice")
            return "function", name
    raise _bad("'tool_choice' must be 'none', 'auto', 'required' or "
               '{"type": "function", "function": {"name": ...}}.', "tool_choice")


def parse_chat(body: Any, spec: ModelSpec) -> ChatInput:
    _check_fields(body, _CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list.", "messages", "invalid_value" if messages else
                   "missing_required_parameter")
    msgs = tuple(_message(i, m, spec.id) for i, m in enumerate(messages))
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be a list.", "tools")
    tool_choice, forced = _tool_choice(body.get("tool_choice"), tools or None)
    agp = _bool(body, "add_generation_prompt")
    cfm = _bool(body, "continue_final_message")
    if cfm and agp:
        raise _bad("'continue_final_message' and 'add_generation_prompt' cannot both be true.",
                   "continue_final_message")
    if cfm and msgs[-1]["role"] != "assistant":
        raise _bad("'continue_final_message' needs the last message to be an assistant message.",
                   "continue_final_message")
    ctk = body.get("chat_template_kwargs")
    if ctk is not None and not isinstance(ctk, dict):
        raise _bad("'chat_template_kwargs' must be an object.", "chat_template_kwargs")
    if body.get("chat_template") is not None:
        raise _bad("'chat_template' overrides are not supported; the model's template is used.",
                   "chat_template", "unsupported_parameter")
    if _bool(body, "echo"):
        raise _bad("'echo' is not supported for chat completions.", "echo", "unsupported_parameter")
    return ChatInput(
        model=_model(body, spec),
        messages=msgs,
        sampling=_sampling(body, spec, chat=True),
        add_generation_prompt=(not cfm) if agp is None else agp,
        continue_final_message=bool(cfm),
        tools=tuple(tools) if tools else None,
        tool_choice=tool_choice,
        forced_function=forced,
        chat_template_kwargs=dict(ctk or {}),
    )


def _prompts(value: Any, param: str) -> tuple[str | tuple[int, ...], ...]:
    """str | list[str] | list[int] | list[list[int]] -> a tuple of prompts."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return tuple(value)
        if _token_ids(value):
            return (tuple(value),)
        if all(_token_ids(p) for p in value):
            return tuple(tuple(p) for p in value)
    if value is None:
        raise _bad(f"'{param}' is required.", param, "missing_required_parameter")
    raise _bad(f"'{param}' must be a string, a list of strings, a list of token ids or a list of "
               "token-id lists (non-empty).", param)


def parse_completion(body: Any, spec: ModelSpec) -> CompletionInput:
    _check_fields(body, _COMPLETION_FIELDS)
    prompts = _prompts(body.get("prompt"), "prompt")
    if body.get("suffix"):
        raise _bad("'suffix' is not supported.", "suffix", "unsupported_parameter")
    if body.get("prompt_embeds") is not None:
        raise _bad("'prompt_embeds' is not supported.", "prompt_embeds", "unsupported_parameter")
    sampling = _sampling(body, spec, chat=False)
    echo = bool(_bool(body, "echo"))
    if sampling.max_tokens == 0 and not echo:
        raise _bad("'max_tokens' may be 0 only with 'echo': true.", "max_tokens")
    return CompletionInput(model=_model(body, spec), prompts=prompts, sampling=sampling, echo=echo)


def parse_embedding(body: Any, spec: ModelSpec) -> EmbeddingInput:
    _check_fields(body, _EMBEDDING_FIELDS)
    if body.get("messages") is not None:
        raise _bad("Chat-style 'messages' input for embeddings is not supported; use 'input'.", "messages",
                   "unsupported_parameter")
    inputs = _prompts(body.get("input"), "input")
    if any(isinstance(x, str) and x == "" for x in inputs):
        raise _bad("'input' must not contain empty strings.", "input")
    fmt = body.get("encoding_format", "float")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise _bad(f"'encoding_format' must be 'float' or 'base64', got {clip(fmt, quote=True)}.", "encoding_format")
    dimensions = _int(body, "dimensions", 1, 1_000_000)
    truncate = _int(body, "truncate_prompt_tokens", -1)
    if body.get("normalize") is False or body.get("use_activation") is False:
        key = "normalize" if body.get("normalize") is False else "use_activation"
        raise _bad(f"'{key}': false is not supported; embeddings are always normalised.", key,
                   "unsupported_parameter")
    for key in ("embed_dtype", "endianness"):
        if body.get(key) not in (None, "float32", "native", "little") and key == "endianness":
            raise _bad(f"'{key}' is not supported.", key, "unsupported_parameter")
        if key == "embed_dtype" and body.get(key) not in (None, "float32"):
            raise _bad(f"'{key}' other than float32 is not supported.", key, "unsupported_parameter")
    return EmbeddingInput(model=_model(body, spec), inputs=inputs, encoding_format=fmt,
                          dimensions=dimensions, truncate_prompt_tokens=truncate)


def parse_line(endpoint: str, body: Any, spec: ModelSpec) -> LineInput:
    """The one entry point: the body of a line for `endpoint` -> its normalised input."""
    if endpoint == CHAT:
        return parse_chat(body, spec)
    if endpoint == COMPLETIONS:
        return parse_completion(body, spec)
    if endpoint == EMBEDDINGS:
        return parse_embedding(body, spec)
    raise LineError(f"Unsupported endpoint {endpoint!r}.", status=400, code="invalid_url", param="url")


def check_supported(inp: LineInput, supported: set[str] | frozenset[str], backend: str) -> None:
    """LineError 400 naming the first parameter set away from its neutral value that `backend`
    cannot honour (`supported` lists the NEUTRAL keys it does honour)."""
    if isinstance(inp, EmbeddingInput):
        return
    s = inp.sampling
    values: dict[str, Any] = {
        "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "min_p": s.min_p,
        "seed": s.seed, "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
        "repetition_penalty": s.repetition_penalty, "stop": s.stop, "stop_token_ids": s.stop_token_ids,
        "logprobs": s.logprobs, "ignore_eos": s.ignore_eos, "min_tokens": s.min_tokens,
        "logit_bias": s.logit_bias, "response_format": s.response_format, "n": s.n,
        "include_stop_str_in_output": s.include_stop_str_in_output,
        "skip_special_tokens": s.skip_special_tokens,
    }
    for key, value in s.extras.items():
        values[key] = value
    if isinstance(inp, ChatInput):
        values["tools"] = inp.tools
        values["continue_final_message"] = inp.continue_final_message
    else:
        values["echo"] = inp.echo
    for key, value in values.items():
        if key in supported:
            continue
        if key in NEUTRAL and value == NEUTRAL[key]:
            continue
        if key not in NEUTRAL and value is None:
            continue
        param = "top_logprobs" if key == "logprobs" and isinstance(inp, ChatInput) and value else key
        raise _bad(f"'{param}' is not supported by the {backend} backend.", param, "unsupported_parameter")
