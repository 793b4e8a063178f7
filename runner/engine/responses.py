"""Responses: finished outputs -> OpenAI response bodies, the ONE set of builders for every backend.

Pure Python (no torch, no vllm). The simulated and transformers backends build ChoiceOutput /
PromptOutput themselves; the vLLM backend turns vLLM's RequestOutputs into the same values
(vllm_convert.py) and calls the same builders, so an output row has one shape whatever the
backend (#12; tests/test_responses.py compares the backends key by key). The shape is that of the
pinned vLLM's OpenAI server (`JSONResponse(content=response.model_dump())`, so unset optional
fields are present as null), read from the 0.26.0 wheel and checked against 0.32's models by
tests/vllm/test_vllm_response_shapes.py:
- chat:        vllm/entrypoints/openai/chat_completion/serving.py::chat_completion_full_generator,
               models in chat_completion/protocol.py (ChatMessage drops an empty `tool_calls` list
               in its serializer, so a plain answer has no `tool_calls` key);
- completions: completion/serving.py::request_output_to_completion_response;
- embeddings:  vllm/entrypoints/pooling/embed/serving.py and pooling/utils.py::get_pooling_usage;
- usage:       UsageInfo / PromptTokenUsageInfo (prompt_tokens_details when cached tokens are known).
"""

from __future__ import annotations

import base64
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.engine.backend import Usage


def _rid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token at a position: its text, log-probability and UTF-8 bytes."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The token at a position, with the `top` alternatives asked for. `logprob` None and `top`
    None: no logprobs at this position (vLLM's first echoed prompt token)."""

    token: str
    logprob: float | None
    bytes: tuple[int, ...] | None = None
    top: tuple[TopLogprob, ...] | None = ()


@dataclass(frozen=True)
class ToolCallOutput:
    """One function call of a choice (vLLM's ToolCall: id, type "function", name, JSON arguments)."""

    id: str
    name: str
    arguments: str  # a JSON text, as OpenAI sends it


@dataclass(frozen=True)
class ChoiceOutput:
    """One generated sequence (one of the n choices of one prompt)."""

    text: str
    num_tokens: int  # generated tokens, as counted for usage.completion_tokens
    finish_reason: str | None = "stop"  # stop | length | abort | error
    stop_reason: str | int | None = None  # the stop string or token id that ended it, if any
    logprobs: tuple[TokenLogprob, ...] | None = None  # None when the request asked for none
    token_ids: tuple[int, ...] | None = None  # shown only when the request asked (return_token_ids)
    # completions: text_offset of the first logprob token (default: after the echoed prompt text)
    logprobs_offset: int | None = None
    tool_calls: tuple[ToolCallOutput, ...] | None = None  # chat: the calls the choice made, if any


@dataclass(frozen=True)
class PromptOutput:
    """All choices of one prompt of a completions line (or the one prompt of a chat line)."""

    prompt_tokens: int
    choices: tuple[ChoiceOutput, ...]
    prompt_text: str = ""  # echoed before each choice's text when the request asked for echo
    prompt_token_ids: tuple[int, ...] | None = None  # shown only when the request asked
    # prefix-cache hits: 0 where there is no prefix cache (transformers, simulated), so usage has
    # prompt_tokens_details whatever the backend, as OpenAI's API and vLLM's server (with
    # --enable-prompt-tokens-details) give it; None only where a backend cannot tell
    cached_tokens: int | None = 0
    created_cache_tokens: int | None = None
    prompt_logprobs: Any = None  # already in its JSON form (vLLM only)


def usage_dict(prompt_tokens: int, completion_tokens: int | None, cached_tokens: int | None = None,
               created_cache_tokens: int | None = None) -> dict[str, Any]:
    """UsageInfo.model_dump(); prompt_tokens_details as with --enable-prompt-tokens-details."""
    details = None
    if cached_tokens is not None or created_cache_tokens is not None:
        details = {"cached_tokens": cached_tokens, "created_cache_tokens": created_cache_tokens,
                   "multimodal_tokens": None}
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + (completion_tokens or 0),
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": details,
        # vLLM 0.32's UsageInfo has it (reasoning tokens; null unless a reasoning parser counts them)
        "completion_tokens_details": None,
    }


def _sum_known(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _chat_logprobs(lps: Sequence[TokenLogprob] | None) -> dict[str, object] | None:
    if lps is None:
        return None
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes) if lp.bytes is not None else None,
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob,
                     "bytes": list(t.bytes) if t.bytes is not None else None}
                    for t in lp.top or ()
                ],
            }
            for lp in lps
        ]
    }


def chat_completion_body(
    model: str,
    prompt: PromptOutput,
    *,
    role: str = "assistant",
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, object]:
    """A chat.completion body for one chat line (n choices of one rendered prompt)."""
    choices = []
    completion_tokens = 0
    for i, c in enumerate(prompt.choices):
        completion_tokens += c.num_tokens
        message: dict[str, object] = {
            "role": role,
            "content": c.text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        if c.tool_calls:  # in ChatMessage's field order; no key at all when there are none
            del message["reasoning"]
            message["tool_calls"] = [{"id": t.id, "type": "function",
                                      "function": {"name": t.name, "arguments": t.arguments}}
                                     for t in c.tool_calls]
            message["reasoning"] = None
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": _chat_logprobs(c.logprobs),
                "finish_reason": c.finish_reason or "stop",
                "stop_reason": c.stop_reason,
                "token_ids": list(c.token_ids) if c.token_ids is not None else None,
                "routed_experts": None,
            }
        )
    return {
        "id": request_id or _rid("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage_dict(prompt.prompt_tokens, completion_tokens, prompt.cached_tokens,
                            prompt.created_cache_tokens),
        "prompt_logprobs": prompt.prompt_logprobs,
        "prompt_token_ids": list(prompt.prompt_token_ids) if prompt.prompt_token_ids is not None else None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def _completion_logprobs(lps: Sequence[TokenLogprob] | None, offset: int) -> dict[str, object] | None:
    if lps is None:
        return None
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    pos = offset
    for lp in lps:
        tokens.append(lp.token)
        token_logprobs.append(lp.logprob)
        if lp.top is None:
            top.append(None)
        else:
            # vLLM puts the sampled token among its top_logprobs dict as well
            entry = {t.token: t.logprob for t in lp.top}
            if lp.logprob is not None:
                entry.setdefault(lp.token, lp.logprob)
            top.append(entry)
        text_offset.append(pos)
        pos += len(lp.token)
    return {"text_offset": text_offset, "token_logprobs": token_logprobs, "tokens": tokens, "top_logprobs": top}


def completion_body(
    model: str,
    prompts: Sequence[PromptOutput],
    *,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, object]:
    """A text_completion body: choice indexes run on across prompts (prompt i, choice j -> i*n+j)."""
    choices = []
    prompt_tokens = completion_tokens = 0
    for p in prompts:
        prompt_tokens += p.prompt_tokens
        for c in p.choices:
            completion_tokens += c.num_tokens
            offset = len(p.prompt_text) if c.logprobs_offset is None else c.logprobs_offset
            choices.append(
                {
                    "index": len(choices),
                    "text": p.prompt_text + c.text,
                    "logprobs": _completion_logprobs(c.logprobs, offset),
                    "finish_reason": c.finish_reason,
                    "stop_reason": c.stop_reason,
                    "token_ids": list(c.token_ids) if c.token_ids is not None else None,
                    "prompt_logprobs": p.prompt_logprobs,
                    "prompt_token_ids": list(p.prompt_token_ids) if p.prompt_token_ids is not None else None,
                    "routed_experts": None,
                }
            )
    # vLLM reports the last prompt's num_cached_tokens; for a multi-prompt line the sum is the
    # honest count, and it equals vLLM's value for the usual single prompt.
    cached = _sum_known([p.cached_tokens for p in prompts])
    return {
        "id": request_id or _rid("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage_dict(prompt_tokens, completion_tokens, cached),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def encode_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes, base64: what OpenAI's and vLLM's encoding_format=base64 return."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embedding_body(
    model: str,
    vectors: Sequence[Sequence[float] | str],
    prompt_tokens: int,
    *,
    encoding_format: str = "float",
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, object]:
    """An embeddings list body: one item per input, in input order. A vector already encoded (a
    base64 string, as vLLM's pooling output gives it) is kept as it is."""
    data = [
        {
            "index": i,
            "object": "embedding",
            "embedding": v if isinstance(v, str)
            else encode_base64(v) if encoding_format == "base64" else [float(x) for x in v],
        }
        for i, v in enumerate(vectors)
    ]
    return {
        "id": request_id or _rid("embd-"),
        "object": "list",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "data": data,
        "usage": usage_dict(prompt_tokens, 0),
    }


def usage_of(body: dict[str, Any]) -> Usage:
    """The Usage of a response body built here (for LineResult.usage and the batch's counters)."""
    u = body.get("usage")
    if not isinstance(u, dict):
        return Usage()
    details = u.get("prompt_tokens_details") or {}
    return Usage(prompt_tokens=int(u.get("prompt_tokens") or 0),
                 completion_tokens=int(u.get("completion_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0))


def _response_logprobs(chat_logprobs: Any) -> list[dict[str, Any]] | None:
    """A chat choice's logprobs.content -> output_text.logprobs (same entries; top ones in the
    Responses order token, bytes, logprob)."""
    if not isinstance(chat_logprobs, dict):
        return None
    return [
        {"token": e["token"], "bytes": e["bytes"] or [], "logprob": e["logprob"],
         "top_logprobs": [{"token": t["token"], "bytes": t["bytes"] or [], "logprob": t["logprob"]}
                          for t in e.get("top_logprobs") or ()]}
        for e in chat_logprobs.get("content") or ()
    ]


def response_object_body(chat: dict[str, Any], request: dict[str, Any], *, response_id: str,
                         logprobs: bool = False) -> dict[str, Any]:
    """A /v1/responses line's answer: OpenAI's `response` object, built from the chat.completion
    body that ran it (engine/responses_api.py) and echoing its Responses `request`. Keys as vLLM
    0.32's ResponsesResponse.model_dump() (responses/protocol.py; its serving.py's fallback for
    models without a reasoning or tool parser builds the output message); values as OpenAI's API
    gives them where vLLM's differ: a message cut by max_output_tokens is `incomplete`, as the
    response is. The openai SDK's `Response` parses it (tests/test_responses_api.py)."""
    choice = chat["choices"][0]
    message = choice["message"]
    cut = choice.get("finish_reason") == "length"
    status = "incomplete" if cut else "completed"
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if text or not message.get("tool_calls"):
        content = []
        if text:
            content.append({"type": "output_text", "text": text, "annotations": [],
                            "logprobs": _response_logprobs(choice.get("logprobs")) if logprobs else None})
        output.append({"id": _rid("msg_"), "type": "message", "role": "assistant", "status": status,
                       "content": content})
    for call in message.get("tool_calls") or ():
        output.append({"id": _rid("fc_"), "type": "function_call", "call_id": call["id"],
                       "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                       "status": "completed"})
    usage = chat.get("usage") or {}
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    tools = request.get("tools") or []
    return {
        "id": response_id,
        "created_at": chat.get("created") or int(time.time()),
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": request.get("instructions"),
        "metadata": request.get("metadata"),
        "model": chat.get("model"),
        "object": "response",
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"),
        "tool_choice": request.get("tool_choice") or ("auto" if tools else "none"),
        "tools": tools,
        "top_p": request.get("top_p"),
        "background": False,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "previous_response_id": None,
        "prompt": None,
        "reasoning": request.get("reasoning"),
        "service_tier": request.get("service_tier") or "auto",
        "status": status,
        "text": request.get("text"),
        "top_logprobs": request.get("top_logprobs"),
        "truncation": request.get("truncation") or "disabled",
        "usage": {
            "input_tokens": input_tokens,
            # cache_write_tokens: the openai SDK's InputTokensDetails requires it (no cache writes here)
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0,
                                     "input_tokens_per_turn": [input_tokens], "cached_tokens_per_turn": [cached]},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning, "tool_output_tokens": 0,
                                      "output_tokens_per_turn": [output_tokens], "tool_output_tokens_per_turn": [0]},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": request.get("user"),
        "presence_penalty": request.get("presence_penalty"),
        "frequency_penalty": request.get("frequency_penalty"),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "input_messages": None,
        "output_messages": None,
    }
