"""Responses: finished outputs -> response bodies shaped like vLLM's OpenAI server.

Pure Python (no torch), shared by the transformers and simulated backends. Shapes are copied from
vLLM's serving code (see ../shared/reference/vllm-engine.md section 2): chat.completion
(`chat_completion/serving.py::chat_completion_full_generator`), text_completion
(`completion/serving.py::request_output_to_completion_response`) and the embeddings list
(`pooling/embed/serving.py`), including the null-valued fields vLLM's `model_dump()` emits.
"""

from __future__ import annotations

import base64
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

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
    """The sampled token at a position, with the `top` alternatives asked for (maybe none)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ChoiceOutput:
    """One generated sequence (one of the n choices of one prompt)."""

    text: str
    num_tokens: int  # generated tokens, as counted for usage.completion_tokens
    finish_reason: str = "stop"  # stop | length | abort | error
    stop_reason: str | int | None = None  # the stop string or token id that ended it, if any
    logprobs: tuple[TokenLogprob, ...] | None = None  # None when the request asked for none


@dataclass(frozen=True)
class PromptOutput:
    """All choices of one prompt of a completions line (or the one prompt of a chat line)."""

    prompt_tokens: int
    choices: tuple[ChoiceOutput, ...]
    prompt_text: str = ""  # echoed before each choice's text when the request asked for echo


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int | None]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


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
                    for t in lp.top
                ],
            }
            for lp in lps
        ]
    }


def chat_completion_body(
    model: str,
    prompt: PromptOutput,
    *,
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, object]:
    """A chat.completion body for one chat line (n choices of one rendered prompt)."""
    choices = []
    completion_tokens = 0
    for i, c in enumerate(prompt.choices):
        completion_tokens += c.num_tokens
        choices.append(
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": c.text,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning": None,
                },
                "logprobs": _chat_logprobs(c.logprobs),
                "finish_reason": c.finish_reason or "stop",
                "stop_reason": c.stop_reason,
                "token_ids": None,
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
        "usage": usage_dict(prompt.prompt_tokens, completion_tokens),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def _completion_logprobs(lps: Sequence[TokenLogprob] | None, offset: int) -> dict[str, object] | None:
    if lps is None:
        return None
    tokens, token_logprobs, top, text_offset = [], [], [], []
    pos = offset
    for lp in lps:
        tokens.append(lp.token)
        token_logprobs.append(lp.logprob)
        # vLLM puts the sampled token among its top_logprobs dict as well
        entry = {t.token: t.logprob for t in lp.top}
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
            choices.append(
                {
                    "index": len(choices),
                    "text": p.prompt_text + c.text,
                    "logprobs": _completion_logprobs(c.logprobs, len(p.prompt_text)),
                    "finish_reason": c.finish_reason or "stop",
                    "stop_reason": c.stop_reason,
                    "token_ids": None,
                    "prompt_logprobs": None,
                    "prompt_token_ids": None,
                }
            )
    return {
        "id": request_id or _rid("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage_dict(prompt_tokens, completion_tokens),
        "kv_transfer_params": None,
    }


def encode_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes, base64: what OpenAI's and vLLM's encoding_format=base64 return."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embedding_body(
    model: str,
    vectors: Sequence[Sequence[float]],
    prompt_tokens: int,
    *,
    encoding_format: str = "float",
    request_id: str | None = None,
    created: int | None = None,
) -> dict[str, object]:
    """An embeddings list body: one item per input, in input order."""
    data = [
        {
            "index": i,
            "object": "embedding",
            "embedding": encode_base64(v) if encoding_format == "base64" else [float(x) for x in v],
        }
        for i, v in enumerate(vectors)
    ]
    return {
        "id": request_id or _rid("embd-"),
        "object": "list",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def usage_of(body: dict[str, object]) -> Usage:
    """The Usage of a response body built here (for LineResult.usage)."""
    u = body.get("usage")
    if not isinstance(u, dict):
        return Usage()
    return Usage(prompt_tokens=int(u.get("prompt_tokens") or 0),
                 completion_tokens=int(u.get("completion_tokens") or 0))
