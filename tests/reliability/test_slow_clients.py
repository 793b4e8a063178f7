"""Slow and oversized clients (issue #14, faults 4 and 5) against a real `runner serve`.

- A 128 MB header is refused with 431 in OpenAI's error shape after RUNNER_MAX_HEADER_BYTES, without
  being buffered (the server's RSS stays flat) and without stalling other clients.
- 600 uploads that send their headers and a few body bytes, then stall, under a soft RLIMIT_NOFILE of
  1,024: uploads past RUNNER_MAX_CONCURRENT_UPLOADS get 503 too_many_uploads at once, the rest get
  408 request_timeout after RUNNER_BODY_TIMEOUT, /health and batch polls answer quickly throughout,
  and a normal upload succeeds once the stalled ones are dropped.
- A request whose body stops mid-way gets 408 with Connection: close; a request whose headers
  trickle in (slowloris) or a connection that sends nothing is dropped after RUNNER_HEADER_TIMEOUT;
  connections past RUNNER_MAX_CONNECTIONS get 503 too_many_connections.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .helpers import LiveServer, chat_line, jsonl, upload

CHAT = "/v1/chat/completions"
BOUNDARY = "slowclientboundary"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (or what arrives before EOF/timeout): status, headers, body."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
        head, _, body = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            got = sock.recv(65536)
            if not got:
                break
            body += got
    if not data.startswith(b"HTTP/1.1 "):
        return 0, {}, data
    return int(data[9:12]), headers, body


def _error(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


def _upload_head(port: int, body_len: int = 10_000_000) -> bytes:
    """The headers of a multipart upload plus its first body bytes; the rest never comes."""
    first = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
             f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
             "Content-Type: application/jsonl\r\n\r\n{\"custom_id\": ").encode()
    return (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {body_len}\r\n\r\n").encode() + first


@contextlib.contextmanager
def _poller(server: LiveServer, path: str = "/health") -> Iterator[dict[str, Any]]:
    """Polls `path` on a fresh connection each time (as a new client would) and samples the server's
    RSS; yields the stats: worst latency, failures, peak RSS."""
    stats: dict[str, Any] = {"worst": 0.0, "failures": [], "rss_peak": 0.0, "n": 0}
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = httpx.get(server.url + path, timeout=30)
                if r.status_code != 200:
                    stats["failures"].append(r.status_code)
            except httpx.HTTPError as exc:
                stats["failures"].append(type(exc).__name__)
            stats["worst"] = max(stats["worst"], time.monotonic() - t0)
            stats["n"] += 1
            stats["rss_peak"] = max(stats["rss_peak"], _rss_mb(server.proc.pid))
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(60)


@contextlib.contextmanager
def _nofile(soft: int) -> Iterator[None]:
    """Processes started inside inherit a soft RLIMIT_NOFILE of `soft` (as a default systemd unit has)."""
    old, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old, hard))


def _ensure_own_fds(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} open files in the test process; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def test_huge_header_gets_431_without_buffering_or_stalling(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_API_KEYS": "sk-one"})  # the sender is not even authenticated
    port = _port(server)
    rss_before = _rss_mb(server.proc.pid)
    chunk = b"a" * (1 << 20)
    sent = 0
    with _poller(server) as stats, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sock.setblocking(False)
        deadline = time.monotonic() + 90
        answered = False
        while sent < 128 * (1 << 20) and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                answered = True
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                except BlockingIOError:
                    continue
        if not answered:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.sendall(b"\r\nAuthorization: Bearer sk-one\r\n\r\n")
        sock.setblocking(True)
        status, headers, body = _read_response(sock, 60)
        time.sleep(0.3)  # one more poll after the big header is gone
    print(f"\nheader: sent {sent / 2**20:.1f} MiB before the answer {status}; other clients' worst latency "
          f"{stats['worst']:.2f}s over {stats['n']} polls; RSS {rss_before:.0f} -> peak {stats['rss_peak']:.0f} MB")
    assert status == 431, (status, body[:200])
    err = _error(body)
    assert err["code"] == "request_header_too_large" and err["type"] == "invalid_request_error"
    assert headers.get("connection") == "close"
    assert headers.get("x-request-id", "").startswith("req_")
    assert sent < 16 * (1 << 20), f"the server read {sent} bytes of one header before refusing it"
    assert not stats["failures"], stats["failures"]
    assert stats["worst"] < 1.0, f"other clients stalled {stats['worst']:.2f}s"
    assert stats["rss_peak"] - rss_before < 30, (rss_before, stats["rss_peak"])


def test_stalled_uploads_do_not_starve_others(live_server: Callable[..., LiveServer]) -> None:
    n = 600
    _ensure_own_fds(n + 200)
    with _nofile(1024):
        server = live_server(env={"RUNNER_BODY_TIMEOUT": "3", "RUNNER_MAX_CONCURRENT_UPLOADS": "64"})
    port = _port(server)
    with server.client() as c:
        fid = upload(c, jsonl([chat_line("a")])).json()["id"]
        bid = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": CHAT,
                                          "completion_window": "24h"}).json()["id"]
    socks: list[socket.socket] = []
    try:
        t_connect = time.monotonic()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(_upload_head(port))
            socks.append(s)
        time.sleep(0.5)
        # other clients, each on a new connection, still get quick answers
        worst = 0.0
        for path in ("/health", f"/v1/batches/{bid}") * 5:
            t0 = time.monotonic()
            r = httpx.get(server.url + path, timeout=10)
            worst = max(worst, time.monotonic() - t0)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert worst < 1.0, f"a poll took {worst:.2f}s with {n} stalled uploads connected"
        # a normal upload succeeds once the stalled ones are dropped (RUNNER_BODY_TIMEOUT=3)
        with server.client() as c:
            while True:
                r = upload(c, jsonl([chat_line("b")]))
                if r.status_code == 200:
                    break
                assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_uploads", r.text
                assert int(r.headers["retry-after"]) >= 1
                assert time.monotonic() - t_connect < 15, "uploads still refused long after the body timeout"
                time.sleep(0.2)
        recovered = time.monotonic() - t_connect
        # every stalled upload got an answer in OpenAI's shape: refused at once, or timed out
        codes: dict[str, int] = {}
        for s in socks:
            status, headers, body = _read_response(s, 10)
            assert status in (503, 408), (status, body[:200])
            assert headers.get("connection") == "close"
            code = _error(body)["code"]
            codes[code] = codes.get(code, 0) + 1
        print(f"\n{n} stalled uploads: {codes}; worst poll {worst:.3f}s; a normal upload succeeded after "
              f"{recovered:.1f}s")
        assert set(codes) == {"too_many_uploads", "request_timeout"}, codes
        assert codes["request_timeout"] <= 64
    finally:
        for s in socks:
            s.close()


def test_body_that_stops_gets_408(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_BODY_TIMEOUT": "1"})
    port = _port(server)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t0 = time.monotonic()
        sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"input_file_id\": ")
        status, headers, body = _read_response(sock, 10)
        waited = time.monotonic() - t0
    assert status == 408, (status, body[:200])
    assert _error(body)["code"] == "request_timeout"
    assert headers.get("connection") == "close"
    assert 0.9 < waited < 4, waited


def test_slow_headers_and_silent_connections_are_dropped(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_HEADER_TIMEOUT": "1"})
    port = _port(server)
    with socket.create_connection(("127.0.0.1", port)) as silent, \
            socket.create_connection(("127.0.0.1", port)) as trickle, \
            socket.create_connection(("127.0.0.1", port)) as late:
        t0 = time.monotonic()
        trickle.sendall(b"GET /health HTTP/1.1\r\n")
        for i in range(3):  # a header line now and then keeps no timer alive
            time.sleep(0.4)
            with contextlib.suppress(OSError):
                trickle.sendall(b"X-Slow: 1\r\n")
            if i == 1:
                late.sendall(b"G")  # at 0.8 s: its head's deadline runs from here, not from the connect
        late.sendall(b"ET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # at 1.2 s
        assert _read_response(late, 10)[0] == 200
        status, _, body = _read_response(trickle, 10)
        assert status == 408 and _error(body)["code"] == "request_timeout", (status, body[:200])
        silent.settimeout(10)
        assert silent.recv(100) == b""  # closed without a word: it never started a request
        assert time.monotonic() - t0 < 4


def test_connections_over_the_cap_get_503(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_MAX_CONNECTIONS": "20", "RUNNER_HEADER_TIMEOUT": "30"})
    port = _port(server)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _read_response(extra, 10)
        assert status == 503, (status, body[:200])
        assert _error(body)["code"] == "too_many_connections"
        assert headers.get("connection") == "close" and int(headers["retry-after"]) >= 1
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200  # room again once they left
