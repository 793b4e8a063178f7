"""Echoed values stay bounded (issue #14, fault 3): a client's value is echoed in an error message
clipped to 100 characters, however large it is.

Before the fix a 30 MB upload gave 30 validation errors of 2.5 MB each, one GET of that batch
returned 82 MB and the API's RSS reached 1.3 GB. Here every place a client value can reach a
message is hit with a value of about 1 MB, on a real server (uvicorn, SQLite, the engine process
with the simulated backend), and the answers are measured in bytes:
- a Batch whose validation failed on lines with huge values (custom_id, method, url, model);
- a Batch with thousands of problems, each small (the list of errors is bounded in bytes too);
- error-file rows the engine writes for line bodies with huge values (chat, embeddings, responses,
  JSON schemas), and `runner run`'s rows for a huge model name;
- direct API errors: a create with a huge unknown parameter, endpoint, metadata, file id; huge query
  parameters, paths, form fields.
The per-code matrix (each code that echoes a client value, hit with a huge one) is
tests/test_error_echo.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from .helpers import LiveServer, assert_error_shape, chat_line, jsonl, upload, wait_batch

HUGE = 1_000_000  # characters of each hostile value
MESSAGE_BOUND = 600  # characters: a message with a few clipped values and the server's own text
BATCH_BOUND = 64 * 1024  # bytes of one GET /v1/batches/{id}, whatever the input held
CHAT = "/v1/chat/completions"


def _h(tag: str, n: int = HUGE) -> str:
    return tag + "x" * n


def _assert_bounded(err: dict[str, Any]) -> None:
    assert len(err["message"]) <= MESSAGE_BOUND, (err.get("code"), len(err["message"]), err["message"][:200])
    assert err.get("param") is None or len(err["param"]) <= MESSAGE_BOUND, (err.get("code"), len(err["param"]))


def test_validation_errors_echo_clipped_values(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    rows: list[Any] = [
        chat_line("ok-1"),
        chat_line(_h("dup-")), chat_line(_h("dup-")),  # duplicate_custom_id
        {**chat_line("method-str"), "method": _h("GET")},  # invalid_method
        {**chat_line("method-list"), "method": [_h("GET")]},  # invalid_method, not a string
        {**chat_line("url"), "url": _h("/v1/")},  # invalid_url
        chat_line("model", model=_h("model-")),  # model_not_found
        {**chat_line("body"), "body": _h("body")},  # invalid_body (no echo)
        {**chat_line("cid-list"), "custom_id": [_h("cid")]},  # invalid_custom_id (no echo)
    ]
    content = jsonl(rows)
    assert len(content) > 8 * HUGE
    with server.client() as c:
        r = upload(c, content)
        assert r.status_code == 200, r.text[:300]
        b = c.post("/v1/batches", json={"input_file_id": r.json()["id"], "endpoint": CHAT,
                                        "completion_window": "24h"})
        assert b.status_code == 200, b.text[:300]
        batch = wait_batch(c, b.json()["id"], until=("failed",))
        got = c.get(f"/v1/batches/{batch['id']}")
        listed = c.get("/v1/batches", params={"limit": 100})
    assert len(got.content) < BATCH_BOUND, len(got.content)
    assert len(listed.content) < BATCH_BOUND, len(listed.content)
    errors = batch["errors"]["data"]
    codes = sorted(e["code"] for e in errors)
    assert codes == sorted(["duplicate_custom_id", "invalid_method", "invalid_method", "invalid_url",
                            "model_not_found", "invalid_body", "invalid_custom_id"]), codes
    for e in errors:
        _assert_bounded(e)
    by_code = {e["code"]: e["message"] for e in errors}
    # the value is still recognisable, and the message says how much was left out
    assert "dup-xxx" in by_code["duplicate_custom_id"] and f"(+{HUGE + 4 - 100} chars)" in \
        by_code["duplicate_custom_id"], by_code["duplicate_custom_id"]
    assert "model-xxx" in by_code["model_not_found"] and "sim-chat" in by_code["model_not_found"]


def test_many_small_errors_stay_bounded_in_bytes(live_server: Callable[..., LiveServer]) -> None:
    """RUNNER_MAX_BATCH_ERRORS may list many problems; their total size is bounded all the same
    (the rest are counted in one too_many_errors entry)."""
    server = live_server(env={"RUNNER_MAX_BATCH_ERRORS": "100000"})
    # control characters: 6 bytes each once escaped in JSON, so the budget is counted in bytes
    rows = [chat_line("ok-1")] + [{**chat_line(f"m{i}"), "method": "\u0001" * 100 + str(i)} for i in range(3000)]
    with server.client() as c:
        r = upload(c, jsonl(rows))
        b = c.post("/v1/batches", json={"input_file_id": r.json()["id"], "endpoint": CHAT,
                                        "completion_window": "24h"})
        batch = wait_batch(c, b.json()["id"], until=("failed",))
        got = c.get(f"/v1/batches/{batch['id']}")
    assert len(got.content) < BATCH_BOUND, len(got.content)
    errors = batch["errors"]["data"]
    last = errors[-1]
    assert last["code"] == "too_many_errors", last
    listed = len(errors) - 1
    assert last["message"].startswith(f"{3000 - listed} more problems"), (listed, last)
    assert all(e["code"] == "invalid_method" for e in errors[:-1])
    assert 10 < listed < 100, listed  # the byte budget stopped the list, not a count


# -- rows of the error file --------------------------------------------------------------------------


def _chat_bodies() -> list[dict[str, Any]]:
    msgs = [{"role": "user", "content": "hi"}]
    schema = {"type": "object", "properties": {_h("p"): {"type": "string"}}, "required": [_h("q")],
              "additionalProperties": False}
    return [
        {_h("unknown_"): 1},
        {"temperature": _h("t")},
        {"top_p": [_h("t")]},
        {"max_tokens": _h("m")},
        {"logit_bias": {_h("k"): 1}},
        {"logit_bias": {"5": _h("v")}},
        {"messages": [{"role": _h("r"), "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": _h("t"), "text": "x"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url" + "x", "text": "x"}]}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
         "tool_choice": {"type": "function", "function": {"name": _h("f")}}},
        {"response_format": {"type": _h("t")}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {
            "type": "object", "properties": {"a": {"$ref": _h("#/nowhere/")}}}}}},
        {"messages": msgs, "stop": [_h("s")] * 5},
    ]


def _responses_bodies() -> list[dict[str, Any]]:
    return [
        {_h("unknown_"): 1},
        {"include": [_h("i")]},
        {"input": [{"type": "message", "role": _h("r"), "content": "hi"}]},
        {"input": [{"type": _h("t")}]},
        {"input": [{"role": "user", "content": [{"type": _h("t"), "text": "x"}]}]},
        {"tools": [{"type": _h("t")}]},
        {"reasoning": {"effort": _h("e")}},
        {"reasoning": {_h("k"): 1}},
        {"max_output_tokens": _h("m")},
        {"text": {"format": {"type": _h("t")}}},
    ]


def _run_rows(c: httpx.Client, endpoint: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = upload(c, jsonl(lines))
    assert r.status_code == 200, r.text[:300]
    b = c.post("/v1/batches", json={"input_file_id": r.json()["id"], "endpoint": endpoint, "completion_window": "24h"})
    assert b.status_code == 200, b.text[:300]
    batch = wait_batch(c, b.json()["id"], until=("completed", "failed"), timeout=60)
    assert batch["status"] == "completed", str(batch["errors"])[:1000]
    assert batch["error_file_id"], batch
    content = c.get(f"/v1/files/{batch['error_file_id']}/content").content
    return [orjson.loads(x) for x in content.splitlines()]


def test_error_rows_echo_clipped_values(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True)
    chat = [chat_line(f"c{i}", **body) for i, body in enumerate(_chat_bodies())]
    embed = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "sim-embed", **b}}
             for i, b in enumerate([{"input": "x", "encoding_format": _h("f")}, {"input": "x", _h("u"): 1},
                                    {"input": [_h("i"), ""]}])]
    resp = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
             "body": {"model": "sim-chat", "input": "hi", **b}} for i, b in enumerate(_responses_bodies())]
    with server.client() as c:
        rows = _run_rows(c, CHAT, chat) + _run_rows(c, "/v1/embeddings", embed) + _run_rows(c, "/v1/responses", resp)
    missing = {x["custom_id"] for x in chat + embed + resp} - {r["custom_id"] for r in rows}
    assert missing == set(), missing
    for row in rows:
        err = row["response"]["body"]["error"] if row["response"] else row["error"]
        assert row["response"] is None or row["response"]["status_code"] >= 400, row
        _assert_bounded(err)


def test_runner_run_rows_echo_clipped_values(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - id: sim\n    backend: simulated\n    task: generate\n    max_tokens: 8\n")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes(jsonl([chat_line("ok", model="sim"), chat_line("big-model", model=_h("model-")),
                           {**chat_line("big-url", model="sim"), "url": _h("/v1/")}]))
    proc = subprocess.run([sys.executable, "-m", "runner", "run", "-i", str(inp), "-o", str(out),
                           "--models", str(models)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stderr) < 64 * 1024, len(proc.stderr)
    rows = {r["custom_id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert set(rows) == {"ok", "big-model", "big-url"}
    for cid in ("big-model", "big-url"):
        err = rows[cid]["response"]["body"]["error"] if rows[cid]["response"] else rows[cid]["error"]
        _assert_bounded(err)


# -- direct API errors -------------------------------------------------------------------------------


def _j(tag: str) -> str:
    """A value as large as a JSON request body may carry (the body is capped at 1 MiB)."""
    return _h(tag, 400_000)


def _create(**body: Any) -> dict[str, Any]:
    return {"input_file_id": "file-abc", "endpoint": CHAT, "completion_window": "24h", **body}


API_CASES: list[tuple[str, str, dict[str, Any]]] = [
    # (name, method path, request kwargs)
    ("create unknown param", "POST /v1/batches", {"json": _create(**{_j("u"): 1})}),
    ("create two unknown params", "POST /v1/batches", {"json": _create(**{_j("u"): 1, _j("v"): 2})}),
    ("create endpoint", "POST /v1/batches", {"json": _create(endpoint=_j("/v1/"))}),
    ("create endpoint list", "POST /v1/batches", {"json": _create(endpoint=[_j("/v1/")])}),
    ("create window", "POST /v1/batches", {"json": _create(completion_window=_j("24h"))}),
    ("create metadata key", "POST /v1/batches", {"json": _create(metadata={_j("k"): "v"})}),
    ("create metadata value", "POST /v1/batches", {"json": _create(metadata={"k": _j("v")})}),
    ("create input_file_id", "POST /v1/batches", {"json": _create(input_file_id=_j("file-"))}),
    ("create expires key", "POST /v1/batches", {"json": _create(output_expires_after={_j("k"): 1})}),
    ("create expires anchor", "POST /v1/batches", {"json": _create(output_expires_after={"anchor": _j("a")})}),
    ("create expires seconds", "POST /v1/batches", {"json": _create(output_expires_after={"seconds": _j("1")})}),
    ("create invalid json", "POST /v1/batches", {"content": b'{"a": "' + b"x" * 900_000 + b'" x}'}),
]


def _small(tag: str, n: int = 60_000) -> str:
    """A value as long as a request line may carry (the URL and headers are capped well below 1 MB)."""
    return tag + "x" * n


URL_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("get file", f"GET /v1/files/{_small('file-')}", {}),
    ("get file content", f"GET /v1/files/{_small('file-')}/content", {}),
    ("get batch", f"GET /v1/batches/{_small('batch_')}", {}),
    ("cancel batch", f"POST /v1/batches/{_small('batch_')}/cancel", {}),
    ("unknown url", f"GET /v1/{_small('nowhere')}", {}),
    ("list order", "GET /v1/files", {"params": {"order": _small("o")}}),
    ("list limit", "GET /v1/batches", {"params": {"limit": _small("1")}}),
    ("list after", "GET /v1/batches", {"params": {"after": _small("batch_")}}),
    ("list purpose", "GET /v1/files", {"params": {"purpose": _small("p")}}),
]


def test_api_errors_echo_clipped_values(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    form_cases: list[tuple[str, dict[str, Any]]] = [
        ("purpose", {"files": {"file": ("a.jsonl", b"{}\n")}, "data": {"purpose": _h("p")}}),
        ("unknown field", {"files": {"file": ("a.jsonl", b"{}\n")}, "data": {"purpose": "batch", _h("f"): "v"}}),
        ("file part name", {"files": {_h("f"): ("a.jsonl", b"{}\n")}, "data": {"purpose": "batch"}}),
        ("expires_after", {"files": {"file": ("a.jsonl", b"{}\n")},
                           "data": {"purpose": "batch", "expires_after[anchor]": _h("a")}}),
    ]
    cases = API_CASES + URL_CASES + [(f"upload {n}", "POST /v1/files", kw) for n, kw in form_cases]
    sizes: dict[str, int] = {}
    unbounded: list[tuple[str, int, str]] = []
    with server.client() as c:
        for name, what, kw in cases:
            method, path = what.split(" ", 1)
            r = c.request(method, path, **kw)
            assert r.status_code < 500, (name, r.status_code, r.text[:300])
            sizes[name] = len(r.content)
            if r.status_code in (414, 431):  # refused before routing: no echo at all
                continue
            err = assert_error_shape(r)
            if len(err["message"]) > MESSAGE_BOUND or len(err["param"] or "") > MESSAGE_BOUND:
                unbounded.append((name, r.status_code, err["message"][:120]))
    assert unbounded == [], "\n".join(map(str, unbounded))
    assert max(sizes.values()) < 2048, sizes
