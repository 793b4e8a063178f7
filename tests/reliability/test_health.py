"""#14: /health says `unhealthy` (503, with reasons that carry stable codes) when the engine is
crash-looping or has stopped making progress while work is pending; monitoring reads the status code.

Real server, real engine (simulated backend). The other unhealthy reasons (engine_frozen,
engine_waiting_for_lock) are tested in test_frozen_engine.py and test_orphan_engine.py.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import httpx
import pytest

from .helpers import SIM_MODELS_YAML, LiveServer, chat_line, jsonl, upload
from .test_orphan_engine import engine_pid, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")


def _reasons(server: LiveServer) -> tuple[int, dict[str, object]]:
    r = httpx.get(server.url + "/health", timeout=2)
    return r.status_code, r.json()


def test_health_shape_when_all_is_well(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True)
    wait_until(lambda: engine_pid(server), 20, "engine alive")
    code, body = _reasons(server)
    assert code == 200
    assert body["status"] == "ok" and body["reasons"] == []
    engine = body["engine"]
    assert isinstance(engine, dict)
    assert engine["alive"] is True and isinstance(engine["pid"], int) and engine["restarts"] == 0
    assert engine["waiting_for_lock"] is None
    assert "models" in body


def test_a_crash_looping_engine_is_unhealthy(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True, env={"RUNNER_ENGINE_RESTART_MAX_DELAY": "0.5"})
    pid = wait_until(lambda: engine_pid(server), 20, "engine alive")
    for _ in range(3):  # three deaths in a row, as an engine that crashes at every start
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        old = pid
        pid = wait_until(lambda old=old: (p := engine_pid(server)) and p != old and p, 20, "engine restarted")
    code, body = _reasons(server)
    assert code == 503, body
    assert body["status"] == "unhealthy"
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    loop = [r for r in reasons if r["code"] == "engine_crash_loop"]
    assert loop and "3" in loop[0]["message"], reasons
    assert body["engine"]["restarts"] == 3  # type: ignore[index]


SLOW_YAML = SIM_MODELS_YAML + """\
  - id: sim-stuck
    backend: simulated
    task: generate
    engine_args:
      latency_per_line: 60
"""


def test_no_progress_while_work_is_pending_is_unhealthy(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True, models_yaml=SLOW_YAML, env={"RUNNER_ENGINE_PROGRESS_TIMEOUT": "2"})
    wait_until(lambda: engine_pid(server), 20, "engine alive")
    with server.client() as c:
        f = upload(c, jsonl([chat_line("s1", model="sim-stuck")]))
        b = c.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})
        assert b.status_code == 200, b.text

        def stuck() -> dict[str, object] | None:
            code, body = _reasons(server)
            if code == 503 and any(r["code"] == "engine_no_progress" for r in body["reasons"]):  # type: ignore[union-attr]
                return body
            return None

        body = wait_until(stuck, 15, "/health reports no progress")
        assert isinstance(body, dict) and body["status"] == "unhealthy"
        reason = next(r for r in body["reasons"] if r["code"] == "engine_no_progress")
        assert "1 batch" in reason["message"]
        # Cancelling the stuck work ends the pending state: healthy again.
        assert c.post(f"/v1/batches/{b.json()['id']}/cancel").status_code == 200
        wait_until(lambda: _reasons(server)[0] == 200, 15, "/health ok once nothing is pending")
