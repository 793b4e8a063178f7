"""runner/engine/vllm_convert.py (and the vllm-free parts of vllm_backend.py), on the CPU.

Fake RequestOutput / CompletionOutput / Logprob objects carry the attributes vLLM 0.26's
vllm/outputs.py and vllm/logprobs.py define; nothing here needs vllm installed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from runner.engine.backend import LineRequest, Usage
from runner.engine.responses import usage_dict as usage_body
from runner.engine.responses import usage_of
from runner.engine.vllm_convert import (
    ChatOptions,
    CompletionOptions,
    LineTracker,
    PendingLine,
    chat_body,
    completion_body,
    embedding_body,
    engine_request_id,
    format_validation_errors,
)
from runner.model_specs import ModelSpec


@dataclass
class FakeLogprob:
    logprob: float
    rank: int | None = 1
    decoded_token: str | None = None


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = "length"
    stop_reason: int | str | None = None
    logprobs: list[dict[int, FakeLogprob]] | None = None
    cumulative_logprob: float | None = None


@dataclass
class FakeRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    prompt: str | None = None
    finished: bool = True
    num_cached_tokens: int | None = 0
    num_cache_creation_tokens: int | None = None
    encoder_prompt_token_ids: list[int] | None = None
    prompt_logprobs: Any = None


@dataclass
class FakePooling:
    request_id: str
    prompt_token_ids: list[int]
    data: list[float] = field(default_factory=lambda: [0.5, -0.25])
    finished: bool = True

    @property
    def outputs(self) -> Any:
        return SimpleNamespace(data=SimpleNamespace(tolist=lambda: list(self.data)))


def decode(token_id: int) -> str:
    return f"<{token_id}>"


CHAT_KEYS = [
    "id",
    "object",
    "created",
    "model",
    "choices",
    "service_tier",
    "system_fingerprint",
    "usage",
    "prompt_logprobs",
    "prompt_token_ids",
    "prompt_text",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
]


def test_chat_body_has_vllm_shape_and_usage() -> None:
    res = FakeRequestOutput(
        "k#0",
        [1, 2, 3, 4],
        [
            FakeCompletion(0, "hello", [5, 6], "stop", None),
            FakeCompletion(1, "hi there", [7, 8, 9], "length"),
        ],
        num_cached_tokens=2,
    )
    body = chat_body(res, ChatOptions(), model="m", decode=decode, request_id="chatcmpl-x", created=7)
    assert list(body) == CHAT_KEYS
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-x" and body["created"] == 7
    c0, c1 = body["choices"]
    assert c0["index"] == 0 and c1["index"] == 1
    assert c0["message"] == {
        "role": "assistant",
        "content": "hello",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "reasoning": None,
    }
    assert "tool_calls" not in c0["message"]  # ChatMessage._serialize drops an empty list
    assert c0["finish_reason"] == "stop" and c1["finish_reason"] == "length"
    assert c0["logprobs"] is None and c0["token_ids"] is None
    assert body["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 9,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 2, "created_cache_tokens": None, "multimodal_tokens": None},
        "completion_tokens_details": None,
    }
    assert usage_of(body) == Usage(prompt_tokens=4, completion_tokens=5, cached_tokens=2)


def test_chat_finish_reason_defaults_to_stop_and_stop_reason_passes() -> None:
    res = FakeRequestOutput("k#0", [1], [FakeCompletion(0, "x", [2], None, "END")])
    choice = chat_body(res, ChatOptions(), model="m", decode=decode)["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "END"


def test_chat_echo_and_role_from_request() -> None:
    req = SimpleNamespace(
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "The answer:"}],
        add_generation_prompt=False,
        echo=True,
    )
    opts = ChatOptions.from_request(req)
    assert opts.role == "assistant" and opts.echo_prefix == "The answer:"
    res = FakeRequestOutput("k#0", [1], [FakeCompletion(0, " 42", [3])])
    assert chat_body(res, opts, model="m", decode=decode)["choices"][0]["message"]["content"] == "The answer: 42"


def test_chat_logprobs() -> None:
    lp = [
        {5: FakeLogprob(-0.1, 1, "he"), 9: FakeLogprob(-2.0, 2, "ha")},
        {6: FakeLogprob(float("-inf"), 1, None)},
    ]
    res = FakeRequestOutput("k#0", [1], [FakeCompletion(0, "hello", [5, 6], "stop", logprobs=lp)])
    opts = ChatOptions(logprobs=True, top_logprobs=1)
    content = chat_body(res, opts, model="m", decode=decode)["choices"][0]["logprobs"]["content"]
    assert content[0] == {
        "token": "he",
        "logprob": -0.1,
        "bytes": list(b"he"),
        "top_logprobs": [{"token": "he", "logprob": -0.1, "bytes": list(b"he")}],
    }
    assert content[1]["token"] == "<6>" and content[1]["logprob"] == -9999.0 and content[1]["bytes"] is None


def test_chat_engine_error_is_a_retryable_500() -> None:
    tracker = LineTracker()
    res = FakeRequestOutput(engine_request_id("b:1", 0), [1], [FakeCompletion(0, "", [], "error")])
    tracker.add(
        PendingLine(
            "b:1",
            "/v1/chat/completions",
            "m",
            1,
            lambda outs: chat_body(outs[0], ChatOptions(), model="m", decode=decode),
        )
    )
    (result,) = tracker.on_outputs([res])
    assert result.status_code == 500 and result.body["error"]["type"] == "server_error"


def test_completion_choice_index_runs_on_across_prompts() -> None:
    results = [
        FakeRequestOutput(
            "k#0", [1, 2], [FakeCompletion(0, "a", [3]), FakeCompletion(1, "b", [4, 5])], num_cached_tokens=1
        ),
        FakeRequestOutput(
            "k#1", [6, 7, 8], [FakeCompletion(0, "c", [9]), FakeCompletion(1, "d", [10])], num_cached_tokens=2
        ),
    ]
    body = completion_body(results, CompletionOptions(), model="m", decode=decode)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == ["a", "b", "c", "d"]
    assert list(body["choices"][0]) == [
        "index",
        "text",
        "logprobs",
        "finish_reason",
        "stop_reason",
        "token_ids",
        "prompt_logprobs",
        "prompt_token_ids",
        "routed_experts",
    ]
    assert body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == 10
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 3


def test_completion_echo_token_ids_and_logprobs() -> None:
    res = FakeRequestOutput("k#0", [1, 2], [FakeCompletion(0, " world", [3])], prompt="hello")
    body = completion_body([res], CompletionOptions(echo=True), model="m", decode=decode)
    assert body["choices"][0]["text"] == "hello world"
    # echo with max_tokens=0: the prompt only
    body = completion_body([res], CompletionOptions(echo=True, max_tokens=0), model="m", decode=decode)
    assert body["choices"][0]["text"] == "hello"
    # token-id prompt: prompt text is unknown to the output; the renderer's text comes in
    res.prompt = None
    body = completion_body([res], CompletionOptions(echo=True), model="m", decode=decode, prompt_texts=["hi"])
    assert body["choices"][0]["text"] == "hi world"
    lp = [{3: FakeLogprob(-0.5, 1, " world"), 4: FakeLogprob(-1.5, 2, " there")}]
    res2 = FakeRequestOutput("k#0", [1], [FakeCompletion(0, " world", [3], logprobs=lp)])
    logprobs = completion_body([res2], CompletionOptions(logprobs=0), model="m", decode=decode)["choices"][0][
        "logprobs"
    ]
    assert logprobs == {
        "text_offset": [0],
        "token_logprobs": [-0.5],
        "tokens": [" world"],
        "top_logprobs": [{" world": -0.5}],
    }
    ids = completion_body([res2], CompletionOptions(return_token_ids=True), model="m", decode=decode)
    assert ids["choices"][0]["token_ids"] == [3] and ids["choices"][0]["prompt_token_ids"] == [1]


def test_embedding_body() -> None:
    body = embedding_body([[0.1, 0.2], "AAAA"], [3, 4], model="e", request_id="embd-1", created=1)
    assert body == {
        "id": "embd-1",
        "object": "list",
        "created": 1,
        "model": "e",
        "data": [
            {"index": 0, "object": "embedding", "embedding": [0.1, 0.2]},
            {"index": 1, "object": "embedding", "embedding": "AAAA"},
        ],
        "usage": {"prompt_tokens": 7, "total_tokens": 7, "completion_tokens": 0, "prompt_tokens_details": None,
                  "completion_tokens_details": None},
    }


def test_usage_without_cache_info_has_no_details() -> None:
    assert usage_body(3, 2)["prompt_tokens_details"] is None


def test_tracker_gathers_parts_in_order_and_skips_unfinished() -> None:
    tracker = LineTracker()
    seen: list[list[str]] = []

    def build(outs: list[Any]) -> dict[str, Any]:
        seen.append([o.request_id for o in outs])
        return {"usage": usage_body(1, 1)}

    ids = tracker.add(PendingLine("b:7", "/v1/completions", "m", 3, build))
    assert ids == ["b:7#0", "b:7#1", "b:7#2"]
    outs = {i: FakeRequestOutput(i, [1], [FakeCompletion(0, "x", [2])]) for i in ids}
    assert tracker.on_outputs([outs["b:7#2"], FakeRequestOutput("b:7#0", [1], [], finished=False)]) == []
    assert tracker.on_outputs([outs["b:7#0"]]) == []
    (result,) = tracker.on_outputs([outs["b:7#1"]])
    assert result.key == "b:7" and result.ok and seen == [ids]
    assert len(tracker) == 0


def test_tracker_forget_returns_ids_and_drops_late_outputs() -> None:
    tracker = LineTracker()
    tracker.add(PendingLine("b:1", "/v1/completions", "m", 2, lambda outs: {}))
    tracker.add(PendingLine("b:2", "/v1/completions", "m", 1, lambda outs: {}))
    assert tracker.forget(["b:1", "nope"]) == ["b:1#0", "b:1#1"]
    late = FakeRequestOutput("b:1#0", [1], [FakeCompletion(0, "x", [2])])
    assert tracker.on_outputs([late]) == []  # an aborted line never produces a result
    assert tracker.keys() == ["b:2"]
    with pytest.raises(ValueError):
        tracker.add(PendingLine("b:2", "/v1/completions", "m", 1, lambda outs: {}))


def test_format_validation_errors() -> None:
    errors = [
        {"loc": ("messages",), "msg": "Field required"},
        {"loc": ("EmbeddingCompletionRequest", "input"), "msg": "Field required"},
        {"loc": ("messages",), "msg": "Field required"},
    ]
    assert format_validation_errors(errors) == "messages: Field required; input: Field required"
    assert format_validation_errors([]) == "invalid request body"


# -- vllm_backend.py without vllm ------------------------------------------------------------


def test_importing_vllm_backend_does_not_import_vllm() -> None:
    code = (
        "import sys; import runner.engine.vllm_backend, runner.engine.vllm_convert; "
        "bad = [m for m in ('vllm', 'torch', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class FakeEngine:
    """The four LLMEngine calls the backend makes, with vLLM's blocking-step rule enforced."""

    def __init__(self) -> None:
        self.requests: dict[str, FakeRequestOutput] = {}
        self.aborted: list[str] = []

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[FakeRequestOutput]:
        assert self.requests, "step() with nothing in flight blocks forever in vLLM"
        rid = next(iter(self.requests))
        return [self.requests.pop(rid)]

    def abort_request(self, ids: list[str], internal: bool = False) -> None:
        self.aborted.extend(ids)
        for rid in ids:
            self.requests.pop(rid, None)


class DeadError(Exception):
    pass


def _bare_backend(engine: FakeEngine) -> Any:
    from runner.engine.vllm_backend import VllmBackend

    backend = object.__new__(VllmBackend)
    backend.spec = ModelSpec(id="m", backend="vllm", path="/x")
    backend._engine = engine
    backend._tracker = LineTracker()
    backend._to_send = []
    backend._api = SimpleNamespace(EngineDeadError=DeadError)
    backend._closed = False
    return backend


def test_backend_step_abort_and_never_steps_empty() -> None:
    engine = FakeEngine()
    backend = _bare_backend(engine)

    def put(key: str, parts: int) -> None:
        line = PendingLine(
            key,
            "/v1/completions",
            "m",
            parts,
            lambda outs: completion_body(outs, CompletionOptions(), model="m", decode=decode),
        )
        for rid in backend._tracker.add(line):
            engine.requests[rid] = FakeRequestOutput(rid, [1], [FakeCompletion(0, "x", [2])])

    put("b:1", 2)
    put("b:2", 1)
    assert backend.has_unfinished()
    backend.abort(["b:2"])
    assert engine.aborted == ["b:2#0"]
    results = []
    while backend.has_unfinished():
        results += backend.step()
    assert [r.key for r in results] == ["b:1"]
    assert [c["index"] for c in results[0].body["choices"]] == [0, 1]
    assert results[0].usage == Usage(prompt_tokens=2, completion_tokens=2, cached_tokens=0)
    assert not backend.has_unfinished()


def test_backend_sends_a_turns_lines_at_the_next_step() -> None:
    """_submit tracks a line and queues it; step() hands the queue to vLLM back to back first. A line
    aborted before then is never sent (nor aborted in vLLM); one vLLM refuses becomes its 400 row."""
    engine = FakeEngine()
    sent: list[str] = []

    def add_request(rid: str, engine_input: Any, params: Any, priority: int = 0) -> None:
        if engine_input == "refuse":
            raise ValueError("Token id 10000000 is out of vocabulary")
        sent.append(rid)
        engine.requests[rid] = FakeRequestOutput(rid, [1], [FakeCompletion(0, "x", [2])])

    engine.add_request = add_request  # type: ignore[attr-defined]
    backend = _bare_backend(engine)
    for key, engine_input in (("b:1", "ok"), ("b:2", "ok"), ("b:3", "refuse"), ("b:4", "ok")):
        line = PendingLine(key, "/v1/completions", "m", 1,
                           lambda outs: completion_body(outs, CompletionOptions(), model="m", decode=decode))
        backend._submit(line, [engine_input], [None], 0)
    assert sent == [] and backend.has_unfinished()
    backend.abort(["b:2"])
    assert engine.aborted == []  # never sent: nothing to abort in vLLM
    results = backend.step()
    assert sent == ["b:1#0", "b:4#0"]  # both sent before the engine stepped
    assert [r.key for r in results if r.status_code == 400] == ["b:3"]
    assert "out of vocabulary" in results[0].body["error"]["message"]
    while backend.has_unfinished():
        results += backend.step()
    assert sorted(r.key for r in results if r.ok) == ["b:1", "b:4"]


def test_backend_step_reports_lines_the_engine_lost() -> None:
    engine = FakeEngine()
    backend = _bare_backend(engine)
    backend._tracker.add(PendingLine("b:9", "/v1/chat/completions", "m", 1, lambda outs: {}))
    (result,) = backend.step()  # engine has nothing: no blocking step(), a 500 row instead
    assert result.key == "b:9" and result.status_code == 500


def test_backend_add_rejects_unknown_endpoint_before_vllm() -> None:
    from runner.errors import LineError

    backend = _bare_backend(FakeEngine())
    with pytest.raises(LineError) as info:
        backend.add(LineRequest("b:1", "b", "c", "/v1/moderations", {"model": "m"}))
    assert info.value.status == 404
