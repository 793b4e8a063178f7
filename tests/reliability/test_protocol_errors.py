"""Small protocol faults (issue #14, fault 11) against a real `runner serve`.

- Every 5xx either leaves the keep-alive connection usable or says `Connection: close` (a 503 on a
  full disk used to close the connection without saying so).
- Two Authorization (or x-api-key) headers are a 400 duplicate_authorization, not "the first wins".
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from .helpers import LiveServer, chat_line, jsonl

CHAT = "/v1/chat/completions"
BOUNDARY = "protocolboundary"


def _multipart(content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n").encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_5xx_keeps_the_connection_or_says_close(live_server: Callable[..., LiveServer], small_disk: Path) -> None:
    server = live_server(data_dir=small_disk / "data")
    conn = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=30)
    conn.request("POST", "/v1/files", body=_multipart(jsonl([chat_line("a")])),
                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:300]
    file_id = json.loads(resp.read())["id"]
    # another process takes every free byte: uploads and database writes now hit ENOSPC
    with contextlib.suppress(OSError), open(small_disk / "filler", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    create = orjson.dumps({"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"})
    requests = [
        ("POST", "/v1/files", _multipart(jsonl([chat_line(f"b{i}") for i in range(300)])),
         {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}),
        ("POST", "/v1/batches", create, {"Content-Type": "application/json"}),
        ("POST", "/v1/batches", create, {"Content-Type": "application/json"}),
    ]
    seen = []
    for method, path, body, headers in requests:
        sock_before = conn.sock
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        seen.append((path, resp.status, resp.getheader("connection")))
        if resp.status < 500:
            continue
        err = orjson.loads(data)["error"]
        assert err["code"] in ("disk_full", "internal_error", "database_busy"), err
        if (resp.getheader("connection") or "").lower() == "close":
            continue  # said so: the next request opens a new connection
        # no Connection: close, so the same connection must carry the next request
        assert conn.sock is sock_before and conn.sock is not None
        try:
            conn.request("GET", "/health")
            follow = conn.getresponse()
            follow.read()
        except (http.client.RemoteDisconnected, ConnectionError) as exc:
            pytest.fail(f"{method} {path} -> {resp.status} without Connection: close, then the connection "
                        f"was closed: {exc!r} (seen {seen})")
        assert follow.status == 200
    conn.close()
    (small_disk / "filler").unlink()
    assert any(status >= 500 for _, status, _ in seen), seen
    print(f"\n5xx on a full disk: {seen}")


def _get(port: int, headers: list[tuple[str, str]]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", "/v1/files")
    for k, v in headers:
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = orjson.loads(resp.read())
    conn.close()
    return resp.status, body


def test_duplicate_authorization_is_400(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_API_KEYS": "sk-one,sk-two"})
    port = _port(server)
    assert _get(port, [("Authorization", "Bearer sk-one")])[0] == 200
    for headers in (
        [("Authorization", "Bearer sk-one"), ("Authorization", "Bearer sk-two")],
        [("Authorization", "Bearer sk-one"), ("Authorization", "Bearer wrong")],
        [("Authorization", "Bearer sk-one"), ("authorization", "Bearer sk-one")],
        [("x-api-key", "sk-one"), ("X-Api-Key", "sk-two")],
    ):
        status, body = _get(port, headers)
        assert status == 400, (headers, status, body)
        err = body["error"]
        assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}
        assert err["code"] == "duplicate_authorization" and err["type"] == "invalid_request_error", err
