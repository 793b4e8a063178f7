"""The lines every backend answers for the shape comparison, and the key-by-key comparison itself.

tests/test_response_shapes.py runs them through the simulated and transformers backends,
tests/vllm/test_vllm_response_shapes.py through vLLM; each compares with the simulated backend's bodies
(computed in process, pure Python), so the three agree key by key. Values may differ (text, token
counts, ids); keys, nesting and which fields are objects may not.
"""

from __future__ import annotations

from typing import Any

from runner.engine.backend import LineRequest
from runner.engine.simulated import SimulatedBackend
from runner.model_specs import ModelSpec

MESSAGES = [{"role": "user", "content": "Name a colour."}]

# key -> (endpoint, body without "model")
GENERATE_LINES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4}),
    "chat-n2-seed": ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "n": 2, "seed": 1}),
    "chat-logprobs": ("/v1/chat/completions",
                      {"messages": MESSAGES, "max_tokens": 3, "logprobs": True, "top_logprobs": 2}),
    "chat-stop": ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 6, "stop": ["\n"]}),
    "completion": ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4}),
    "completion-list": ("/v1/completions", {"prompt": ["one", "two three"], "max_tokens": 2}),
    "completion-logprobs": ("/v1/completions", {"prompt": "Hello", "max_tokens": 3, "logprobs": 1}),
    "completion-echo": ("/v1/completions", {"prompt": "Hello", "max_tokens": 2, "echo": True}),
}
EMBED_LINES: dict[str, tuple[str, dict[str, Any]]] = {
    "embed": ("/v1/embeddings", {"input": "a red apple"}),
    "embed-list-base64": ("/v1/embeddings", {"input": ["one", "two"], "encoding_format": "base64"}),
}


def requests(lines: dict[str, tuple[str, dict[str, Any]]], model: str) -> list[LineRequest]:
    return [LineRequest(key=k, batch_id="b", custom_id=k, endpoint=url, body={"model": model, **body})
            for k, (url, body) in lines.items()]


def simulated_bodies(lines: dict[str, tuple[str, dict[str, Any]]], task: str) -> dict[str, Any]:
    backend = SimulatedBackend(ModelSpec(id="shape", backend="simulated", task=task, max_tokens=8))
    for req in requests(lines, "shape"):
        backend.add(req)
    out: dict[str, Any] = {}
    while backend.has_unfinished():
        for r in backend.step():
            assert r.status_code == 200, r.body
            out[r.key] = r.body
    return out


def shape_diff(a: Any, b: Any, path: str = "body") -> list[str]:
    """Where `a` and `b` differ in shape: dict keys, and object-or-list versus scalar. A scalar
    may differ in value and type (stop_reason None or "\\n"), and a list in length; the first
    elements of two non-empty lists are compared. A completion's top_logprobs entry is a map from
    token to logprob: its keys are values."""
    if isinstance(a, dict) and isinstance(b, dict) and path.endswith(".top_logprobs[0]"):
        return []  # completions' {token: logprob}: its keys are the tokens, values
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        if set(a) != set(b):
            diffs.append(f"{path}: only in the first {sorted(set(a) - set(b))}, "
                         f"only in the second {sorted(set(b) - set(a))}")
        for k in sorted(set(a) & set(b)):
            diffs += shape_diff(a[k], b[k], f"{path}.{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list):
        return shape_diff(a[0], b[0], f"{path}[0]") if a and b else []
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    return []
