"""#14 fault 10: an engine that freezes while holding SQLite's write lock made API writes fail with
500 after 30 s, and /health said alive.

Now a locked database answers 503 `database_busy` with Retry-After within RUNNER_DB_BUSY_TIMEOUT,
and the supervisor's watchdog sees the frozen engine (its heartbeat goes stale), reports it in
/health and kills and restarts it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from .helpers import LiveServer, assert_error_shape, chat_line, jsonl, upload
from .test_orphan_engine import alive, engine_pid, run_batch, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")


def test_a_locked_database_gives_503_with_retry_after(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(env={"RUNNER_DB_BUSY_TIMEOUT": "1"})
    with server.client() as c:
        f = upload(c, jsonl([chat_line("a")]))
        assert f.status_code == 200, f.text
        # Another process holds the write lock (as a frozen engine would).
        outside = sqlite3.connect(server.data_dir / "runner.db", isolation_level=None, timeout=5)
        outside.execute("BEGIN IMMEDIATE")
        try:
            t0 = time.monotonic()
            r = upload(c, jsonl([chat_line("b")]))
            took = time.monotonic() - t0
            err = assert_error_shape(r, 503)
            assert err["code"] == "database_busy" and err["type"] == "server_error"
            assert int(r.headers["retry-after"]) >= 1
            assert took < 5, took  # RUNNER_DB_BUSY_TIMEOUT, not SQLite's 30 s default wait
            r = c.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})
            err = assert_error_shape(r, 503)
            assert err["code"] == "database_busy" and "retry-after" in r.headers
            # Readers are not blocked by a writer (WAL): a GET still answers.
            assert c.get(f"/v1/files/{f.json()['id']}").status_code == 200
            # The connection stays usable after the 503 (no half-closed keep-alive).
            assert c.get("/v1/files").status_code == 200
        finally:
            outside.execute("ROLLBACK")
            outside.close()
        # The lock released, the same request succeeds.
        assert upload(c, jsonl([chat_line("c")])).status_code == 200


def test_a_frozen_engine_is_reported_then_restarted(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True, env={"RUNNER_ENGINE_STALL_TIMEOUT": "2"})
    pid = wait_until(lambda: engine_pid(server), 20, "engine alive")
    assert isinstance(pid, int)
    time.sleep(1.5)  # its first heartbeats are in
    assert httpx.get(server.url + "/health", timeout=2).status_code == 200
    os.kill(pid, signal.SIGSTOP)  # frozen: alive, holds its locks, does nothing
    t0 = time.monotonic()
    try:
        def frozen() -> dict[str, object] | None:
            r = httpx.get(server.url + "/health", timeout=2)
            if r.status_code == 503 and any(x["code"] == "engine_frozen" for x in r.json()["reasons"]):
                return dict(r.json())
            return None

        body = wait_until(frozen, 10, "/health reports the frozen engine")
        assert isinstance(body, dict) and body["status"] == "unhealthy"
        # The watchdog kills the frozen engine's group and starts a new one.
        wait_until(lambda: not alive(pid), 10, "the frozen engine killed")
        new = wait_until(lambda: (p := engine_pid(server)) and p != pid and p, 20, "a new engine")
        assert new != pid
        assert run_batch(server)["status"] == "completed"
        recovered = time.monotonic() - t0
        assert recovered < 20, recovered
        wait_until(lambda: httpx.get(server.url + "/health", timeout=2).status_code == 200, 10, "/health ok")
        health = httpx.get(server.url + "/health", timeout=2).json()
        assert health["status"] == "ok" and health["reasons"] == [] and health["engine"]["restarts"] >= 1
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
