"""Issue 13 through a real `runner serve` (API + engine child) and the official openai client: bytes
uploaded as the SDK sends them (named "upload"), structured output on the simulated backend parsed
from choices[0].message.content and checked against its schema, and a forced tool call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import openai
import orjson
import pytest

from .test_server import Server, _exactly_once, _wait

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 30},
        "population": {"type": "integer", "minimum": 0},
        "founded": {"type": "string", "format": "date"},
        "districts": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "size": {"enum": ["small", "medium", "large"]},
    },
    "required": ["city", "population", "size"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1,
                                                                             "maximum": 5}},
    "required": ["query", "limit"]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("structured"))
    try:
        yield s
    finally:
        s.stop()


def _line(cid: str, **body: object) -> dict[str, object]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-chat", "messages": [{"role": "user", "content": f"Describe city {cid}."}],
                     **body}}


def test_bytes_upload_named_upload_runs_a_batch(server: Server) -> None:
    c = server.client
    lines = [_line(f"b{i}") for i in range(5)]
    f = c.files.create(file=b"".join(orjson.dumps(x) + b"\n" for x in lines), purpose="batch")
    assert f.filename == "upload" and f.purpose == "batch"
    b = _wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id, ("completed", "failed"))
    assert b.status == "completed", b.errors
    out, err = _exactly_once(c, b, [x["custom_id"] for x in lines])
    assert len(out) == 5 and err == []


def test_structured_output_and_tool_calls_through_the_sdk(server: Server, tmp_path: Path) -> None:
    c = server.client
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    lines = [_line(f"s{i}", response_format=fmt, max_tokens=200, seed=i) for i in range(10)]
    lines += [_line("obj", response_format={"type": "json_object"}, max_tokens=200)]
    lines += [_line("tool", tools=[TOOL], tool_choice="required", max_tokens=200)]
    lines += [_line("bad", response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "^[A-Z]+$"}}})]
    f = c.files.create(file=b"".join(orjson.dumps(x) + b"\n" for x in lines), purpose="batch")
    b = _wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id, ("completed", "failed"))
    assert b.status == "completed", b.errors
    out, err = _exactly_once(c, b, [x["custom_id"] for x in lines])
    validator = jsonschema_rs.validator_for(SCHEMA, validate_formats=True)
    by_id = {r["custom_id"]: r["response"]["body"] for r in out}
    contents = set()
    for i in range(10):
        # the SDK's own type parses the row body; the content is JSON valid against the schema
        completion = openai.types.chat.ChatCompletion.model_validate(by_id[f"s{i}"])
        content = completion.choices[0].message.content
        assert content is not None
        value = json.loads(content)
        assert validator.is_valid(value), value
        contents.add(content)
    assert len(contents) > 1  # the instance depends on the line
    assert isinstance(json.loads(by_id["obj"]["choices"][0]["message"]["content"]), dict)
    call = openai.types.chat.ChatCompletion.model_validate(by_id["tool"]).choices[0]
    assert call.finish_reason == "tool_calls" and call.message.tool_calls
    args = json.loads(call.message.tool_calls[0].function.arguments)
    assert jsonschema_rs.validator_for(TOOL["function"]["parameters"]).is_valid(args), args
    (bad,) = err
    assert bad["custom_id"] == "bad" and bad["response"]["status_code"] == 400
    error = bad["response"]["body"]["error"]
    assert error["code"] == "unsupported_parameter" and "'pattern'" in error["message"]
