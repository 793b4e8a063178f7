"""Structured output on the transformers backend through a real `runner serve` and the openai client:
a tiny random-weight Llama (only the grammar can make its text JSON) answers json_schema and
json_object lines with valid JSON, and schemas it cannot enforce come back as 400 rows in the
error file, each custom_id exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import orjson
import pytest

from .test_server import Server, _exactly_once, _wait

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fixtures.tiny_models import build_tiny_llama  # noqa: E402

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["answer", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hf-structured")
    model = build_tiny_llama(tmp / "tiny-llama")
    yaml = f"models:\n  - id: tiny\n    backend: transformers\n    path: {model}\n    max_tokens: 300\n"
    s = Server(tmp, models_yaml=yaml)
    try:
        yield s
    finally:
        s.stop()


def _line(cid: str, **body: object) -> dict[str, object]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": f"q {cid}"}], "temperature": 1.0,
                     **body}}


def test_json_schema_and_json_object_through_the_sdk(server: Server, tmp_path: Path) -> None:
    c = server.client
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    lines = [_line(f"s{i}", response_format=fmt, seed=i) for i in range(1, 5)]
    lines.append(_line("obj", response_format={"type": "json_object"}, seed=3))
    lines.append(_line("bad", response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}))
    lines.append(_line("not", response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"not": {"type": "string"}}}}))
    f = c.files.create(file=b"".join(orjson.dumps(x) + b"\n" for x in lines), purpose="batch")
    b = _wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id, ("completed", "failed"), timeout=180)
    assert b.status == "completed", b.errors
    out, err = _exactly_once(c, b, [str(x["custom_id"]) for x in lines])
    body = {r["custom_id"]: r["response"]["body"] for r in out}
    validator = jsonschema_rs.validator_for(SCHEMA)
    for i in range(1, 5):
        choice = body[f"s{i}"]["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        validator.validate(json.loads(choice["message"]["content"]))
    assert isinstance(json.loads(body["obj"]["choices"][0]["message"]["content"]), dict)
    errors = {r["custom_id"]: r["response"] for r in err}
    assert set(errors) == {"bad", "not"}
    for cid, code in (("bad", "invalid_value"), ("not", "unsupported_parameter")):
        e = errors[cid]["body"]["error"]
        assert errors[cid]["status_code"] == 400
        assert (e["code"], e["param"]) == (code, "response_format.json_schema.schema"), e
        assert len(e["message"]) < 300
