"""Recovery from slow and oversized clients (#14 faults 4 and 5), for benchmarks/bench_faults.py.

- stalled_uploads: the API under a soft RLIMIT_NOFILE of 1,024 with default settings; 600 clients
  send an upload's headers and first bytes, then stall. Seconds from the first of them connecting
  until a normal upload succeeds (the refused ones go at once, the 64 held ones after
  RUNNER_BODY_TIMEOUT, 30 s). Raises if a /health poll meanwhile fails or takes over 1 s.
- huge_header: one client streams a 128 MB header. Seconds from its first byte until the server
  has answered it 431 and a /health on another connection answers (fails if it is not a 431).
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, Server  # noqa: E402
from bench_slow_clients import upload_head  # noqa: E402


@contextlib.contextmanager
def _nofile(soft: int) -> Iterator[None]:
    old, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old, hard))


def _server(tmp: Path, soft_nofile: int | None = None) -> Server:
    models = tmp / "models.yaml"
    models.write_text(SIM_MODELS_YAML)
    with _nofile(soft_nofile) if soft_nofile else contextlib.nullcontext():
        server = Server(tmp / "data", models, env={"RUNNER_LOG_LEVEL": "warning"}, args=["--no-engine"])
    server.wait_ready(engine=False)
    return server


def _health_ok(base: str) -> None:
    t0 = time.monotonic()
    r = httpx.get(base + "/health", timeout=5)
    took = time.monotonic() - t0
    if r.status_code != 200 or took > 1.0:
        raise RuntimeError(f"/health answered {r.status_code} in {took:.2f}s while slow clients were connected")


def stalled_uploads(tmp: Path) -> float:
    with _server(tmp, soft_nofile=1024) as server:
        old, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(old, min(hard, 4096)), hard))
        socks: list[socket.socket] = []
        try:
            t0 = time.monotonic()
            for _ in range(600):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                s.sendall(upload_head(server.port))
                socks.append(s)
            while True:
                _health_ok(server.base)
                r = httpx.post(server.base + "/v1/files", data={"purpose": "batch"},
                               files={"file": ("in.jsonl", b'{"custom_id": "a"}\n')}, timeout=10)
                if r.status_code == 200:
                    return time.monotonic() - t0
                if time.monotonic() - t0 > 120:
                    raise RuntimeError(f"uploads still refused after 120 s: {r.status_code} {r.text[:200]}")
                time.sleep(0.2)
        finally:
            for s in socks:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (old, hard))


def huge_header(tmp: Path) -> float:
    with _server(tmp) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        chunk = b"a" * (1 << 20)
        t0 = time.monotonic()
        sock.sendall(b"GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sock.setblocking(False)
        sent = 0
        while sent < 128 * (1 << 20):
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if not writable:
                raise RuntimeError("the server neither read nor answered the header for 30 s")
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
            except OSError:
                break
        sock.setblocking(True)
        sock.settimeout(10)
        answer = sock.recv(100)
        if not answer.startswith(b"HTTP/1.1 431"):
            raise RuntimeError(f"not refused with 431 after {sent} bytes: {answer[:60]!r}")
        _health_ok(server.base)
        return time.monotonic() - t0


SCENARIOS: dict[str, Callable[[Path], float]] = {
    "stalled_uploads": stalled_uploads,
    "huge_header": huge_header,
}
