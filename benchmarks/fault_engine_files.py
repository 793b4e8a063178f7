"""#14 faults 1, 2 and the input half of 8: the engine's open files and damaged input files.

Scenarios for bench_faults.py (each returns seconds, or raises when the server does not recover):
- fd_limit: FD_BATCHES small batches created with the engine off, then `runner serve` started under
  a soft RLIMIT_NOFILE of 1,024 (the engine inherits it). Seconds from the start until every batch
  is completed, with 0 engine restarts (before the fix: 173 restarts in 4 minutes, stuck at 31/600).
- damaged_batch: a big batch runs on a slowed model beside a small healthy one; the big one's input
  file is deleted. Seconds from the delete until the damaged batch is `failed` (file_not_found) and
  the healthy one `completed`, with 0 engine restarts (before: the engine crash-looped at its next
  restart and every batch stopped).
- damaged_at_start: the same with the input deleted while the server is down: seconds from the
  server start until the damaged batch is `failed` and the healthy one `completed`.

Run alone, it measures how many batches run at once under a 1,024-descriptor limit:

    python benchmarks/fault_engine_files.py --batches 2000

creates that many 2-line batches with the engine off, starts the server under the limit on a model
that holds every line 2 s (so all batches are open and in flight together), and reports the batches
in progress at once, the engine's peak open descriptors, the restarts and the time to finish.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from _harness import Server, table, write_result

FD_LIMIT = 1024
FD_BATCHES = 600

MODELS_YAML = """models:
  - id: sim
    backend: simulated
    task: generate
    max_tokens: 16
  - id: sim-slow
    backend: simulated
    task: generate
    max_tokens: 8
    engine_args: {latency_per_line: 0.01, max_inflight: 8}
  - id: sim-held
    backend: simulated
    task: generate
    max_tokens: 8
    engine_args: {latency_per_line: 2.0, max_inflight: 100000}
"""
ENV = {"RUNNER_BACKEND": "simulated", "RUNNER_LOG_LEVEL": "warning"}
ENDED = ("completed", "failed", "expired", "cancelled")


@contextlib.contextmanager
def fd_limit(n: int) -> Iterator[None]:
    """Processes started inside inherit a soft RLIMIT_NOFILE of `n`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _server(tmp: Path, *, engine: bool = True, limit: int | None = None) -> Server:
    models = tmp / "models.yaml"
    models.write_text(MODELS_YAML)
    with fd_limit(limit) if limit else contextlib.nullcontext():
        server = Server(tmp / "data", models, env=ENV, args=[] if engine else ["--no-engine"])
    server.wait_ready(timeout=60, engine=engine)
    return server


def _lines(prefix: str, n: int, model: str, pad: int = 0) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": model, "messages": [
                                      {"role": "user", "content": f"hi {i} " + "x" * pad}]}}) + b"\n"
                    for i in range(n))


def _upload(c: httpx.Client, body: bytes) -> str:
    r = c.post("/v1/files", files={"file": ("in.jsonl", body)}, data={"purpose": "batch"})
    r.raise_for_status()
    return str(r.json()["id"])


def _create(c: httpx.Client, file_id: str) -> str:
    r = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                    "completion_window": "24h"})
    r.raise_for_status()
    return str(r.json()["id"])


def _status(c: httpx.Client, bid: str) -> dict[str, Any]:
    return dict(c.get(f"/v1/batches/{bid}").json())


def _wait_started(c: httpx.Client, ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    for bid in ids:
        while _status(c, bid)["status"] == "validating":
            if time.monotonic() > deadline:
                raise RuntimeError("validation did not finish")
            time.sleep(0.05)


def _restarts(server: Server) -> int:
    return int(httpx.get(server.base + "/health", timeout=5).json()["engine"]["restarts"])


def _many_waiting(tmp: Path, n: int, model: str) -> list[str]:
    """`n` 2-line batches, validated with the engine off (so they all start together)."""
    with _server(tmp, engine=False) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        fid = _upload(c, _lines("fd", 2, model))
        ids = [_create(c, fid) for _ in range(n)]
        _wait_started(c, ids)
    return ids


def _count(c: httpx.Client, ids: list[str]) -> dict[str, int]:
    """Statuses of `ids`, read a page of 100 at a time (GET /v1/batches lists them newest first)."""
    want, counts, after = set(ids), {}, None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = c.get("/v1/batches", params=params).json()
        for b in page["data"]:
            if b["id"] in want:
                counts[b["status"]] = counts.get(b["status"], 0) + 1
        if not page["has_more"]:
            return counts
        after = page["data"][-1]["id"]


def fd_limit_scenario(tmp: Path) -> float:
    ids = _many_waiting(tmp, FD_BATCHES, "sim")
    t0 = time.perf_counter()
    with _server(tmp, limit=FD_LIMIT) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        deadline = time.monotonic() + 120
        while (counts := _count(c, ids)).get("completed", 0) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all completed: {counts}, restarts {_restarts(server)}")
            time.sleep(0.2)
        took = time.perf_counter() - t0
        if (r := _restarts(server)) != 0:
            raise RuntimeError(f"engine restarted {r} times")
    return took


def _damaged(c: httpx.Client, server: Server, damaged: str, healthy: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        d, h = _status(c, damaged), _status(c, healthy)
        if d["status"] in ENDED and h["status"] in ENDED:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"damaged {d['status']}, healthy {h['status']} after {timeout}s")
        time.sleep(0.02)
    codes = [e["code"] for e in (d.get("errors") or {}).get("data", [])]
    if d["status"] != "failed" or codes != ["file_not_found"] or h["status"] != "completed":
        raise RuntimeError(f"damaged {d['status']} {codes}, healthy {h['status']}")
    if (r := _restarts(server)) != 0:
        raise RuntimeError(f"engine restarted {r} times")


def damaged_batch(tmp: Path) -> float:
    with _server(tmp) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        big_file = _upload(c, _lines("big", 3000, "sim-slow", pad=500))  # past one read chunk
        big = _create(c, big_file)
        healthy = _create(c, _upload(c, _lines("ok", 50, "sim-slow")))
        deadline = time.monotonic() + 60
        while _status(c, big)["request_counts"]["completed"] < 20:
            if time.monotonic() > deadline:
                raise RuntimeError("the big batch did not start")
            time.sleep(0.02)
        (tmp / "data" / "files" / big_file).unlink()
        t0 = time.perf_counter()
        _damaged(c, server, big, healthy)
        return time.perf_counter() - t0


def damaged_at_start(tmp: Path) -> float:
    with _server(tmp, engine=False) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        big_file = _upload(c, _lines("big", 300, "sim"))
        big = _create(c, big_file)
        healthy = _create(c, _upload(c, _lines("ok", 50, "sim")))
        _wait_started(c, [big, healthy])
    (tmp / "data" / "files" / big_file).unlink()
    t0 = time.perf_counter()
    with _server(tmp) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        _damaged(c, server, big, healthy)
        return time.perf_counter() - t0


SCENARIOS: dict[str, Callable[[Path], float]] = {
    "fd_limit": fd_limit_scenario,
    "damaged_batch": damaged_batch,
    "damaged_at_start": damaged_at_start,
}


def _open_fds(pid: int | None) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) if pid else 0
    except OSError:
        return 0


def at_once(tmp: Path, n: int) -> dict[str, Any]:
    """How many batches run at once under FD_LIMIT: all `n` start together on a model that holds
    every line 2 s, so they are all open and in flight at the same time."""
    ids = _many_waiting(tmp, n, "sim-held")
    t0 = time.perf_counter()
    peak_running = peak_fds = 0
    with _server(tmp, limit=FD_LIMIT) as server, httpx.Client(base_url=server.base, timeout=60) as c:
        deadline = time.monotonic() + 600
        while True:
            peak_fds = max(peak_fds, _open_fds(server.engine_pid()))
            counts = _count(c, ids)
            running = n - sum(counts.get(s, 0) for s in ENDED)
            peak_running = max(peak_running, running)
            if counts.get("completed", 0) == n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return {"batches": n, "fd_limit": FD_LIMIT, "completed": counts.get("completed", 0),
                "peak_in_progress": peak_running, "engine_peak_fds": peak_fds, "restarts": _restarts(server),
                "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description="batches running at once under a 1,024-descriptor limit")
    ap.add_argument("--batches", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fault-w1-") as tmp:
        row = at_once(Path(tmp), args.batches)
    print(table([row], list(row)))
    print(write_result("fd-limit", row))


if __name__ == "__main__":
    main()
