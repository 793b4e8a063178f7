"""OpenAI request bodies -> the simulated backend's inputs (prompt text, token counts, sampling).

Checks what a real server would reject (LineError, HTTP 400): missing messages, n < 1, a negative
max_tokens, a prompt or input of the wrong type, out-of-range temperature/top_p, a bad stop.
Token counts are words, so they are deterministic and cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.errors import LineError


@dataclass(frozen=True)
class Sampling:
    n: int
    max_tokens: int
    stop: list[str]
    seed: Any
    logprobs: int | None


def _int(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise LineError(f"'{name}' must be an integer >= {minimum}, got {v!r}.", param=name)
    return v


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
        raise LineError(f"'{name}' must be a number between {lo} and {hi}, got {v!r}.", param=name)


def sampling(body: dict[str, Any], default_max: int, *, chat: bool) -> Sampling:
    n = _int(body, "n", minimum=1) or 1
    mt = _int(body, "max_completion_tokens", minimum=0) if chat else None
    if mt is None:
        mt = _int(body, "max_tokens", minimum=0)
    if mt is None:
        mt = default_max if chat else min(16, default_max)
    _number(body, "temperature", 0.0, 2.0)
    _number(body, "top_p", 0.0, 1.0)
    _number(body, "presence_penalty", -2.0, 2.0)
    _number(body, "frequency_penalty", -2.0, 2.0)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise LineError("'stop' must be a string or a list of strings.", param="stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise LineError("'seed' must be an integer.", param="seed")
    logprobs: int | None = None
    if chat:
        if body.get("logprobs"):
            logprobs = _int(body, "top_logprobs", minimum=0) or 0
    else:
        logprobs = _int(body, "logprobs", minimum=0)
    return Sampling(n=n, max_tokens=mt, stop=stops, seed=seed, logprobs=logprobs)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or "type" not in part:
                raise LineError(f"{where}: each content part must be an object with a 'type'.", param="messages")
            if part["type"] == "text":
                parts.append(str(part.get("text", "")))
        return " ".join(parts)
    raise LineError(f"{where}: 'content' must be a string or a list of content parts.", param="messages")


def chat_prompt(body: dict[str, Any]) -> tuple[str, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LineError("'messages' is required and must be a non-empty list.", param="messages")
    texts, tokens = [], 2
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise LineError(f"messages[{i}] must be an object with a 'role'.", param="messages")
        text = _content_text(m.get("content"), f"messages[{i}]")
        texts.append(f"{m['role']}: {text}")
        tokens += 4 + len(text.split())
    return "\n".join(texts), tokens


def _is_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def _ids_text(ids: list[int]) -> str:
    return " ".join(f"t{t}" for t in ids)


def completion_prompts(body: dict[str, Any]) -> list[tuple[str, int]]:
    """[(prompt text, prompt tokens)] for a str, list of str, token ids or list of token-id lists."""
    p = body.get("prompt")
    if isinstance(p, str):
        return [(p, max(1, len(p.split())))]
    if _is_ids(p):
        return [(_ids_text(p), len(p))]
    if isinstance(p, list) and p:
        if all(isinstance(x, str) for x in p):
            return [(x, max(1, len(x.split()))) for x in p]
        if all(_is_ids(x) for x in p):
            return [(_ids_text(x), len(x)) for x in p]
    raise LineError("'prompt' must be a string, a list of strings, a list of token ids or a list of "
                    "token-id lists.", param="prompt")


def embedding_inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
    x = body.get("input")
    if isinstance(x, str):
        return [(x, max(1, len(x.split())))]
    if _is_ids(x):
        return [(_ids_text(x), len(x))]
    if isinstance(x, list) and x:
        if all(isinstance(s, str) for s in x):
            return [(s, max(1, len(s.split()))) for s in x]
        if all(_is_ids(s) for s in x):
            return [(_ids_text(s), len(s)) for s in x]
    raise LineError("'input' must be a string, a list of strings, a list of token ids or a list of "
                    "token-id lists.", param="input")
