"""vLLM outputs -> the neutral outputs of responses.py, and engine-request bookkeeping for the vLLM backend.

Pure Python: nothing here imports vllm or torch, so it runs (and is tested) on any CPU machine.
`vllm_backend.py` parses and renders request bodies with vLLM's own request models and hands the
finished `RequestOutput` / `PoolingRequestOutput` objects here; any object with the same attributes
works (the CPU tests use small fakes). What vLLM's server does between its engine output and its
response model (logprob clamping and decoding, echo, token ids, cached-token usage) happens here,
following vllm/entrypoints/openai/{chat_completion,completion}/serving.py; the bodies themselves
come from responses.py, the one set of builders every backend uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.engine import responses
from runner.engine.backend import LineResult
from runner.engine.responses import ChoiceOutput, PromptOutput, TokenLogprob, TopLogprob, chat_completion_body
from runner.errors import openai_error_body

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"

# vllm/v1/engine/__init__.py::FinishReason: stop, length, abort, error, repetition. "error" is a
# retryable request-level internal error: vLLM's server answers HTTP 500 (`_raise_if_error`).
FINISH_ERROR = "error"
LOGPROB_FLOOR = -9999.0  # vLLM clamps -inf logprobs to this JSON-safe value

Decode = Callable[[int], str]


def random_id(prefix: str) -> str:
    """`chatcmpl-…`, `cmpl-…`, `embd-…`: vLLM's `random_uuid()` is uuid4().hex."""
    return f"{prefix}-{uuid.uuid4().hex}"


def engine_request_id(key: str, part: int) -> str:
    """The id one engine request of a line carries (a line fans out into one per prompt)."""
    return f"{key}#{part}"


# ---------------------------------------------------------------------------------------------
# Options read off vLLM's parsed request models (plain getattr: works on fakes too)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatOptions:
    """What chat_completion_full_generator reads from a ChatCompletionRequest after generation."""

    role: str = "assistant"
    logprobs: bool = False
    top_logprobs: int | None = 0
    logprob_token_ids: tuple[int, ...] = ()
    return_token_ids: bool = False
    return_tokens_as_token_ids: bool = False
    echo_prefix: str | None = None  # last message content when echo and it has the response role

    @classmethod
    def from_request(cls, req: Any, response_role: str = "assistant") -> ChatOptions:
        messages = list(getattr(req, "messages", []) or [])
        # serving.py::get_chat_request_role
        if getattr(req, "add_generation_prompt", True) or not messages:
            role = response_role
        else:
            role = str(_get(messages[-1], "role") or response_role)
        echo_prefix: str | None = None
        if getattr(req, "echo", False):
            echo_prefix = ""
            if messages and _get(messages[-1], "role") == role:
                content = _get(messages[-1], "content") or ""
                if isinstance(content, list):
                    content = "\n".join(str(_get(part, "text") or "") for part in content)
                echo_prefix = str(content)
        return cls(
            role=role,
            logprobs=bool(getattr(req, "logprobs", False)),
            top_logprobs=getattr(req, "top_logprobs", 0),
            logprob_token_ids=tuple(getattr(req, "logprob_token_ids", None) or ()),
            return_token_ids=bool(getattr(req, "return_token_ids", False)),
            return_tokens_as_token_ids=bool(getattr(req, "return_tokens_as_token_ids", False)),
            echo_prefix=echo_prefix,
        )


@dataclass(frozen=True)
class CompletionOptions:
    """What request_output_to_completion_response reads from a CompletionRequest."""

    echo: bool = False
    max_tokens: int | None = 16
    logprobs: int | None = None
    logprob_token_ids: tuple[int, ...] = ()
    return_token_ids: bool = False
    return_tokens_as_token_ids: bool = False

    @classmethod
    def from_request(cls, req: Any) -> CompletionOptions:
        return cls(
            echo=bool(getattr(req, "echo", False)),
            max_tokens=getattr(req, "max_tokens", 16),
            logprobs=getattr(req, "logprobs", None),
            logprob_token_ids=tuple(getattr(req, "logprob_token_ids", None) or ()),
            return_token_ids=bool(getattr(req, "return_token_ids", False)),
            return_tokens_as_token_ids=bool(getattr(req, "return_tokens_as_token_ids", False)),
        )


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# ---------------------------------------------------------------------------------------------
# Logprobs (serving.py::_create_chat_logprobs, completion/serving.py::_create_completion_logprobs)
# -> the neutral TokenLogprob values responses.py renders
# ---------------------------------------------------------------------------------------------


def _decoded(lp: Any, token_id: int, decode: Decode, as_id: bool) -> str:
    # generate/base/serving.py::_get_decoded_token
    if as_id:
        return f"token_id:{token_id}"
    if getattr(lp, "decoded_token", None) is not None:
        return str(lp.decoded_token)
    return decode(token_id)


def _utf8(text: str) -> tuple[int, ...]:
    return tuple(text.encode("utf-8", errors="replace"))


def chat_logprobs(
    token_ids: Sequence[int], steps: Sequence[dict[int, Any] | None], opts: ChatOptions, decode: Decode
) -> tuple[TokenLogprob, ...]:
    as_id = opts.return_tokens_as_token_ids
    content: list[TokenLogprob] = []
    for i, token_id in enumerate(token_ids):
        step = steps[i] if i < len(steps) else None
        if step is None or step.get(token_id) is None:
            token = f"token_id:{token_id}" if as_id else decode(token_id)
            content.append(TokenLogprob(token, LOGPROB_FLOOR, _utf8(token), ()))
            continue
        lp = step[token_id]
        top = tuple(
            TopLogprob(tok := _decoded(p_lp, p_id, decode, as_id), max(p_lp.logprob, LOGPROB_FLOOR), _utf8(tok))
            for rank, (p_id, p_lp) in enumerate(step.items())
            if opts.logprob_token_ids
            or opts.top_logprobs == -1
            or (opts.top_logprobs is not None and rank < opts.top_logprobs)
        )
        decoded = getattr(lp, "decoded_token", None)
        content.append(TokenLogprob(_decoded(lp, token_id, decode, as_id), max(lp.logprob, LOGPROB_FLOOR),
                                    None if decoded is None else _utf8(decoded), top))
    return tuple(content)


def completion_logprobs(
    token_ids: Sequence[int],
    steps: Sequence[dict[int, Any] | None],
    num_top: int,
    decode: Decode,
    *,
    as_id: bool = False,
    all_top: bool = False,
) -> tuple[TokenLogprob, ...]:
    out: list[TokenLogprob] = []
    for i, token_id in enumerate(token_ids):
        step = steps[i] if i < len(steps) else None
        if step is None:
            out.append(TokenLogprob(f"token_id:{token_id}" if as_id else decode(token_id), None, None, None))
            continue
        lp = step[token_id]
        # "num_top + 1" entries, as the OpenAI API defines it (vLLM's comment)
        top = tuple(TopLogprob(_decoded(p_lp, p_id, decode, as_id), max(p_lp.logprob, LOGPROB_FLOOR))
                    for rank, (p_id, p_lp) in enumerate(step.items()) if all_top or num_top >= rank)
        out.append(TokenLogprob(_decoded(lp, token_id, decode, as_id), max(lp.logprob, LOGPROB_FLOOR), None, top))
    return tuple(out)


def prompt_logprobs_body(prompt_logprobs: Sequence[dict[int, Any] | None] | None) -> Any:
    """clamp_prompt_logprobs + model_dump of dict[int, Logprob] (JSON keys become strings)."""
    if prompt_logprobs is None:
        return None
    out: list[dict[str, Any] | None] = []
    for step in prompt_logprobs:
        if step is None:
            out.append(None)
            continue
        out.append(
            {
                str(tid): {
                    "logprob": max(lp.logprob, LOGPROB_FLOOR),
                    "rank": getattr(lp, "rank", None),
                    "decoded_token": getattr(lp, "decoded_token", None),
                }
                for tid, lp in step.items()
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Response bodies
# ---------------------------------------------------------------------------------------------


class GenerationFailed(Exception):
    """An output finished with finish_reason "error": the line gets a 500 (retryable) row."""


def _check_not_error(outputs: Iterable[Any]) -> None:
    for out in outputs:
        if getattr(out, "finish_reason", None) == FINISH_ERROR:
            raise GenerationFailed("Internal server error: the engine failed this request; retry it")


def chat_body(
    res: Any,
    opts: ChatOptions,
    *,
    model: str,
    decode: Decode,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """One finished RequestOutput (all n choices) -> chat.completion body (responses.py builds it)."""
    outputs = list(res.outputs)
    _check_not_error(outputs)
    choices = []
    for out in outputs:
        logprobs = None
        if opts.logprobs and (opts.top_logprobs is not None or opts.logprob_token_ids):
            logprobs = chat_logprobs(out.token_ids, out.logprobs or [], opts, decode)
        content = out.text
        if opts.echo_prefix is not None:
            content = opts.echo_prefix + (content or "")
        choices.append(ChoiceOutput(content, len(out.token_ids), out.finish_reason or "stop", out.stop_reason,
                                    logprobs, tuple(out.token_ids) if opts.return_token_ids else None))
    prompt_tokens = len(res.prompt_token_ids or [])
    if getattr(res, "encoder_prompt_token_ids", None) is not None:
        prompt_tokens += len(res.encoder_prompt_token_ids)
    prompt = PromptOutput(
        prompt_tokens, tuple(choices),
        prompt_token_ids=tuple(res.prompt_token_ids or []) if opts.return_token_ids else None,
        cached_tokens=getattr(res, "num_cached_tokens", None),
        created_cache_tokens=getattr(res, "num_cache_creation_tokens", None),
        prompt_logprobs=prompt_logprobs_body(getattr(res, "prompt_logprobs", None)))
    return chat_completion_body(model, prompt, role=opts.role, request_id=request_id or random_id("chatcmpl"),
                                created=created)


def completion_body(
    results: Sequence[Any],
    opts: CompletionOptions,
    *,
    model: str,
    decode: Decode,
    prompt_texts: Sequence[str | None] | None = None,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The finished RequestOutputs of one line's prompts, in prompt order -> text_completion body.

    The choice index runs on across prompts (prompt 0's n choices, then prompt 1's, ...)."""
    prompts: list[PromptOutput] = []
    for p, res in enumerate(results):
        outputs = list(res.outputs)
        _check_not_error(outputs)
        prompt_ids = list(res.prompt_token_ids or [])
        prompt_text = res.prompt
        if prompt_text is None and prompt_texts is not None and p < len(prompt_texts):
            prompt_text = prompt_texts[p]
        prompt_lps = getattr(res, "prompt_logprobs", None)
        echo_text = ("" if opts.return_token_ids else (prompt_text or "")) if opts.echo else ""
        choices = []
        for out in outputs:
            token_ids: list[int]
            steps: list[Any]
            if opts.echo and opts.max_tokens == 0:
                token_ids, steps, text = prompt_ids, list(prompt_lps or []), ""
            elif opts.echo:
                token_ids = [*prompt_ids, *out.token_ids]
                steps = [*(prompt_lps or []), *(out.logprobs or [])]
                text = out.text
            else:
                token_ids, steps, text = list(out.token_ids), list(out.logprobs or []), out.text
            logprobs = None
            if opts.logprobs is not None:
                logprobs = completion_logprobs(token_ids, steps, opts.logprobs, decode,
                                               as_id=opts.return_tokens_as_token_ids,
                                               all_top=bool(opts.logprob_token_ids))
            choices.append(ChoiceOutput(text, len(out.token_ids), out.finish_reason, out.stop_reason, logprobs,
                                        tuple(out.token_ids) if opts.return_token_ids else None,
                                        logprobs_offset=0))
        prompts.append(PromptOutput(len(prompt_ids), tuple(choices), echo_text,
                                    prompt_token_ids=tuple(prompt_ids) if opts.return_token_ids else None,
                                    cached_tokens=getattr(res, "num_cached_tokens", None),
                                    prompt_logprobs=prompt_logprobs_body(prompt_lps)))
    return responses.completion_body(model, prompts, request_id=request_id or random_id("cmpl"), created=created)


def embedding_body(
    embeddings: Sequence[list[float] | str],
    prompt_token_counts: Sequence[int],
    *,
    model: str,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """Encoded embeddings (float lists or base64 strings), one per input, -> embeddings list body."""
    return responses.embedding_body(model, embeddings, sum(prompt_token_counts),
                                    request_id=request_id or random_id("embd"), created=created)


def format_validation_errors(errors: Iterable[dict[str, Any]], limit: int = 5) -> str:
    """pydantic's ValidationError.errors() -> one readable line ("messages: Field required")."""
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if not _is_union_tag(x)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    unique = list(dict.fromkeys(parts))
    text = "; ".join(unique[:limit])
    if len(unique) > limit:
        text += f"; and {len(unique) - limit} more"
    return text or "invalid request body"


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member's class name into loc (e.g. "EmbeddingCompletionRequest")
    return isinstance(part, str) and part[:1].isupper() and "Request" in part


# ---------------------------------------------------------------------------------------------
# Lines in flight: engine request ids <-> lines
# ---------------------------------------------------------------------------------------------


@dataclass
class PendingLine:
    """One input line in the engine: its engine requests and what building its body needs."""

    key: str
    endpoint: str
    model: str
    parts: int
    build: Callable[[list[Any]], dict[str, Any]]  # finished outputs in part order -> 200 body
    outputs: dict[int, Any] = field(default_factory=dict)

    @property
    def request_ids(self) -> list[str]:
        return [engine_request_id(self.key, i) for i in range(self.parts)]


class LineTracker:
    """Gathers finished engine outputs into finished lines; forgets aborted lines.

    An output whose id is unknown (its line was aborted in the same step, or it never belonged to
    this backend) is dropped: a backend returns nothing for an aborted line."""

    def __init__(self) -> None:
        self._lines: dict[str, PendingLine] = {}
        self._by_request: dict[str, tuple[str, int]] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, key: object) -> bool:
        return key in self._lines

    def add(self, line: PendingLine) -> list[str]:
        if line.key in self._lines:
            raise ValueError(f"line {line.key!r} is already in flight")
        self._lines[line.key] = line
        for part, rid in enumerate(line.request_ids):
            self._by_request[rid] = (line.key, part)
        return line.request_ids

    def forget(self, keys: Iterable[str]) -> list[str]:
        """Drop lines; returns the engine request ids to abort."""
        ids: list[str] = []
        for key in keys:
            line = self._lines.pop(key, None)
            if line is None:
                continue
            for rid in line.request_ids:
                self._by_request.pop(rid, None)
                ids.append(rid)
        return ids

    def keys(self) -> list[str]:
        return list(self._lines)

    def on_outputs(self, outputs: Iterable[Any]) -> list[LineResult]:
        """Feed one step's outputs; returns the lines that finished with it."""
        done: list[LineResult] = []
        for out in outputs:
            if not getattr(out, "finished", True):
                continue
            where = self._by_request.pop(out.request_id, None)
            if where is None:
                continue
            key, part = where
            line = self._lines[key]
            line.outputs[part] = out
            if len(line.outputs) == line.parts:
                del self._lines[key]
                done.append(finish_line(line))
        return done


def finish_line(line: PendingLine) -> LineResult:
    ordered = [line.outputs[i] for i in range(line.parts)]
    try:
        body = line.build(ordered)
    except GenerationFailed as exc:
        return LineResult(line.key, 500, openai_error_body(str(exc), "server_error", None, "engine_error"))
    return LineResult(line.key, 200, body, responses.usage_of(body))


def error_result(key: str, status: int, message: str, code: str | None = None) -> LineResult:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return LineResult(key, status, openai_error_body(message, type_, None, code))
