"""Helpers for the API tests: build input lines, upload them, create batches, check error bodies."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.testclient import TestClient

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"


def line(custom_id: str = "r1", *, model: str = "sim-chat", url: str = CHAT, **body: Any) -> dict[str, Any]:
    """One well-formed input line for `url`."""
    if url == EMBED:
        payload: dict[str, Any] = {"model": model, "input": "hello"}
    elif url == "/v1/completions":
        payload = {"model": model, "prompt": "hello"}
    else:
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    payload.update(body)
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def jsonl(*rows: Any) -> bytes:
    """Rows (dicts, or raw bytes/str kept as they are) -> JSONL bytes with a final newline."""
    out = []
    for row in rows:
        if isinstance(row, bytes):
            out.append(row)
        elif isinstance(row, str):
            out.append(row.encode())
        else:
            out.append(orjson.dumps(row))
    return b"\n".join(out) + b"\n"


def upload(
    client: TestClient,
    content: bytes,
    *,
    purpose: str = "batch",
    filename: str = "input.jsonl",
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
) -> Any:
    form = {"purpose": purpose, **(data or {})}
    return client.post("/v1/files", files={"file": (filename, content)}, data=form, headers=headers)


def upload_ok(client: TestClient, content: bytes, **kw: Any) -> dict[str, Any]:
    r = upload(client, content, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def create_batch(client: TestClient, file_id: str, *, endpoint: str = CHAT, headers: dict[str, str] | None = None,
                 **extra: Any) -> Any:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
    return client.post("/v1/batches", json=body, headers=headers)


def wait_status(client: TestClient, batch_id: str, *, headers: dict[str, str] | None = None,
                leave: str = "validating", timeout: float = 10.0) -> dict[str, Any]:
    """Poll until the batch leaves `leave` (validation runs on a worker thread)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/batches/{batch_id}", headers=headers)
        assert r.status_code == 200, r.text
        batch: dict[str, Any] = r.json()
        if batch["status"] != leave:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {leave} after {timeout}s")
        time.sleep(0.02)


def run_batch(client: TestClient, content: bytes, *, endpoint: str = CHAT, **kw: Any) -> dict[str, Any]:
    """Upload `content`, create a batch on it and return the batch once validation is done."""
    f = upload_ok(client, content)
    r = create_batch(client, f["id"], endpoint=endpoint, **kw)
    assert r.status_code == 200, r.text
    return wait_status(client, r.json()["id"])


def assert_error(r: Any, status: int, *, code: str | None = None, param: str | None = "<any>",
                 type_: str | None = None) -> dict[str, Any]:
    """The response is an OpenAI error body {"error": {message, type, param, code}} with `status`."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id", "").startswith("req_")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if type_ is not None:
        assert err["type"] == type_
    if code is not None:
        assert err["code"] == code, err
    if param != "<any>":
        assert err["param"] == param, err
    return dict(err)


def create_unvalidated(client: TestClient, file_id: str) -> dict[str, Any]:
    """Create a batch whose validation never starts, so it stays `validating` (a crash, or a slow validator)."""
    svc = client.app.state.services  # type: ignore[attr-defined]
    submit = svc.submit_validation
    svc.submit_validation = lambda batch_id: None
    try:
        r = create_batch(client, file_id)
    finally:
        svc.submit_validation = submit
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
