"""#14 faults 7, 8 (output half) and 9: files cut on disk, orphan files.

Scenarios for bench_faults.py (each returns seconds, or raises when the server does not recover):
- truncated_output: a completed batch's output file is cut to half its size on disk. Seconds from
  the cut until GET content answers 500 file_damaged (before the fix: never; the old
  Content-Length was sent and the connection dropped mid-body).
- recovery_cut: a server (API and engine) is SIGKILLed mid-batch and the output file is cut
  mid-row below its last checkpoint. Seconds from the restart until the batch is `completed` with
  every custom_id exactly once across its output and error files (before the fix: completed with
  one row glued onto the torn one, its custom_id in neither file).
- orphan_sweep: ORPHANS orphan files (no row names them: uploads cut between their rename and
  their row) and as many temp files are left in the files dir of a stopped server. Seconds from
  the restart until /health answers, with every orphan gone.
- startup_clean: the same restart with no orphans, for comparison.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from _harness import Server

ORPHANS = 1000

MODELS_YAML = """models:
  - id: sim
    backend: simulated
    task: generate
    max_tokens: 8
  - id: sim-slow
    backend: simulated
    task: generate
    max_tokens: 8
    engine_args: {latency_per_line: 0.02, max_inflight: 4}
"""


def _server(tmp: Path, *, engine: bool = True) -> Server:
    models = tmp / "models.yaml"
    models.write_text(MODELS_YAML)
    server = Server(tmp / "data", models, env={"RUNNER_CHECKPOINT_INTERVAL": "0.1"},
                    args=[] if engine else ["--no-engine"])
    server.wait_ready(timeout=60, engine=engine)
    return server


def _lines(n: int, model: str) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}})
                    + b"\n" for i in range(n))


def _batch(c: httpx.Client, n: int, model: str) -> str:
    up = c.post("/v1/files", files={"file": ("in.jsonl", _lines(n, model))}, data={"purpose": "batch"})
    up.raise_for_status()
    r = c.post("/v1/batches", json={"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions",
                                    "completion_window": "24h"})
    r.raise_for_status()
    return str(r.json()["id"])


def _wait(c: httpx.Client, bid: str, until: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        b = c.get(f"/v1/batches/{bid}").json()
        if b["status"] in until:
            return dict(b)
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {bid} still {b['status']} after {timeout} s")
        time.sleep(0.02)


def truncated_output(tmp: Path) -> float:
    with _server(tmp) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        b = _wait(c, _batch(c, 200, "sim"), ("completed", "failed", "expired", "cancelled"))
        if b["status"] != "completed":
            raise RuntimeError(f"batch {b['status']}")
        path = tmp / "data" / "files" / b["output_file_id"]
        os.truncate(path, path.stat().st_size // 2)
        t0 = time.perf_counter()
        r = c.get(f"/v1/files/{b['output_file_id']}/content")
        took = time.perf_counter() - t0
        if r.status_code != 500 or r.json()["error"]["code"] != "file_damaged":
            raise RuntimeError(f"not reported: {r.status_code}")
        return took


def recovery_cut(tmp: Path) -> float:
    server = _server(tmp)
    n = 300
    with httpx.Client(base_url=server.base, timeout=30) as c:
        bid = _batch(c, n, "sim-slow")
        out_id = _wait(c, bid, ("in_progress",))["output_file_id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/files/{out_id}").json()["bytes"] < 20_000:
            if time.monotonic() > deadline:
                raise RuntimeError("no checkpoint")
            time.sleep(0.05)
    engine = server.engine_pid()
    os.killpg(server.proc.pid, signal.SIGKILL)  # API and engine at once, as a power cut
    if engine:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine, signal.SIGKILL)
    server.proc.wait()
    server.log.close()
    time.sleep(0.5)
    with contextlib.closing(sqlite3.connect(tmp / "data" / "runner.db")) as db:
        recorded = int(db.execute("SELECT bytes FROM files WHERE id = ?", (out_id,)).fetchone()[0])
    out = tmp / "data" / "files" / out_id
    data = out.read_bytes()[:recorded]
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    os.truncate(out, start + (data.find(b"\n", start) - start) // 2)  # mid-row, below the checkpoint
    t0 = time.perf_counter()
    with _server(tmp) as again, httpx.Client(base_url=again.base, timeout=30) as c:
        b = _wait(c, bid, ("completed", "failed", "expired", "cancelled"))
        took = time.perf_counter() - t0
        rows = [orjson.loads(x) for f in (b["output_file_id"], b["error_file_id"])
                for x in c.get(f"/v1/files/{f}/content").content.splitlines()]
    ids = Counter(r["custom_id"] for r in rows)
    if b["status"] != "completed" or len(ids) != n or max(ids.values()) != 1:
        raise RuntimeError(f"{b['status']}: {len(ids)} ids, max {max(ids.values())}")
    return took


def _restart_with_orphans(tmp: Path, orphans: int) -> float:
    with _server(tmp, engine=False) as server, httpx.Client(base_url=server.base, timeout=30) as c:
        for _ in range(10):
            c.post("/v1/files", files={"file": ("in.jsonl", _lines(5, "sim"))}, data={"purpose": "batch"})
    files = tmp / "data" / "files"
    for i in range(orphans):
        (files / f"file-orphan{i:08d}").write_bytes(b"x" * 1024)
        (files / ".tmp" / f"upload-1-{i}").write_bytes(b"x" * 1024)
    t0 = time.perf_counter()
    with _server(tmp, engine=False):
        took = time.perf_counter() - t0
    left = [p for p in files.iterdir() if p.name.startswith("file-orphan")] + list((files / ".tmp").iterdir())
    if left:
        raise RuntimeError(f"{len(left)} orphans left")
    return took


SCENARIOS: dict[str, Callable[[Path], float]] = {
    "truncated_output": truncated_output,
    "recovery_cut": recovery_cut,
    "orphan_sweep": lambda tmp: _restart_with_orphans(tmp, ORPHANS),
    "startup_clean": lambda tmp: _restart_with_orphans(tmp, 0),
}
