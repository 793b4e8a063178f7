"""#14 faults 6 and 10 and /health: recovery times of the engine process (see bench_faults.py).

- orphan_engine: SIGKILL of the API process alone (what the OOM killer does). Seconds from the kill
  until a server restarted on the same data dir has completed a new batch (the orphaned engine held
  engine.lock forever before the fix: that was a failure, never a time).
- frozen_engine: SIGSTOP of the engine (frozen, holding its locks), RUNNER_ENGINE_STALL_TIMEOUT=2.
  Seconds from the stop until a new batch has completed: the watchdog's stall timeout, the kill, the
  restart and the batch.
- crash_loop_health: the engine SIGKILLed 3 times in a row. Seconds from the third kill until
  /health answers 503 engine_crash_loop (monitoring's view).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from _harness import SIM_MODELS_YAML, Server


def _server(tmp: Path, data: Path, env: dict[str, str] | None = None) -> Server:
    models = tmp / "models.yaml"
    models.write_text(SIM_MODELS_YAML)
    server = Server(data, models, env={"RUNNER_BACKEND": "simulated", "RUNNER_LOG_LEVEL": "warning", **(env or {})})
    server.wait_ready(timeout=60)
    return server


def _batch(server: Server, lines: int = 10, timeout: float = 60.0) -> None:
    """Upload, create and wait for one small batch to complete."""
    body = b"".join(orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "sim", "messages": [{"role": "user", "content": f"hi {i}"}]}})
                    + b"\n" for i in range(lines))
    with httpx.Client(base_url=server.base, timeout=30) as c:
        f = c.post("/v1/files", files={"file": ("in.jsonl", body)}, data={"purpose": "batch"})
        f.raise_for_status()
        b = c.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})
        b.raise_for_status()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = c.get(f"/v1/batches/{b.json()['id']}").json()["status"]
            if status == "completed":
                return
            if status in ("failed", "expired", "cancelled"):
                raise RuntimeError(f"batch ended {status}")
            time.sleep(0.02)
    raise RuntimeError(f"batch not completed within {timeout}s")


def _pid(server: Server, timeout: float = 30.0, other_than: int | None = None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.engine_pid()
        if pid and pid != other_than:
            return pid
        time.sleep(0.05)
    raise RuntimeError("no engine")


def orphan_engine(tmp: Path) -> float:
    data = tmp / "data"
    first = _server(tmp, data)
    engine = _pid(first)
    try:
        t0 = time.monotonic()
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        second = _server(tmp, data)
        try:
            _batch(second)
            return time.monotonic() - t0
        finally:
            second.stop()
    finally:
        first.stop()
        try:
            os.killpg(engine, signal.SIGKILL)  # only if the fix failed: leave no orphan behind
        except ProcessLookupError:
            pass


def frozen_engine(tmp: Path) -> float:
    server = _server(tmp, tmp / "data", env={"RUNNER_ENGINE_STALL_TIMEOUT": "2"})
    try:
        engine = _pid(server)
        time.sleep(1.5)  # its heartbeats are in
        t0 = time.monotonic()
        os.kill(engine, signal.SIGSTOP)
        _pid(server, other_than=engine)
        _batch(server)
        return time.monotonic() - t0
    finally:
        server.stop()


def crash_loop_health(tmp: Path) -> float:
    server = _server(tmp, tmp / "data", env={"RUNNER_ENGINE_RESTART_MAX_DELAY": "0.5"})
    try:
        pid = _pid(server)
        t0 = time.monotonic()
        for i in range(3):
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            if i < 2:
                pid = _pid(server, other_than=pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = httpx.get(server.base + "/health", timeout=2)
            if r.status_code == 503 and any(x["code"] == "engine_crash_loop" for x in r.json()["reasons"]):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError("/health never reported engine_crash_loop")
    finally:
        server.stop()


SCENARIOS: dict[str, Callable[[Path], float]] = {
    "orphan_engine": orphan_engine,
    "frozen_engine": frozen_engine,
    "crash_loop_health": crash_loop_health,
}
