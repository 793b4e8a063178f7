"""Recovery never glues a row onto a cut-off one (issue #14, fault 7).

An output file shorter than its last checkpoint (a disk that lost a tail the checkpoint counted,
a restore from a backup, an operator's truncate) ends mid-row. Recovery used to keep that partial
row and append the next one right after it: one line of two rows glued together, unreadable, so
its custom_id was in neither file while the counts said complete. Now recovery cuts back to the
last complete row and runs every line whose row was lost again.

Both engines' sources are tested: the server's (a real `runner serve` killed with SIGKILL mid-batch,
its output cut mid-row below the checkpoint, restarted) and `runner run`'s (a finished run's output
cut mid-row below the checkpoint file's size, rerun).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .helpers import LiveServer, chat_line, jsonl, upload, wait_batch

N = 60
SLOW_YAML = """\
models:
  - id: sim-chat
    backend: simulated
    task: generate
    max_tokens: 8
    engine_args: {latency_per_line: 0.05, max_inflight: 2}
"""


def _rows(data: bytes) -> list[dict]:
    """Every line must be one JSON row: a glued line fails here."""
    return [json.loads(line) for line in data.splitlines()]


def _cut_mid_row(path: Path, below: int) -> int:
    """Truncate `path` inside the last row that starts before `below` (half-way into it)."""
    data = path.read_bytes()[:below]
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    end = data.find(b"\n", start)
    cut = start + (end - start) // 2
    os.truncate(path, cut)
    return cut


def _recorded_bytes(data_dir: Path, file_id: str) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "runner.db")) as db:
        return int(db.execute("SELECT bytes FROM files WHERE id = ?", (file_id,)).fetchone()[0])


def test_server_recovery_cuts_back_to_the_last_whole_row(live_server: Callable[..., LiveServer]) -> None:
    env = {"RUNNER_CHECKPOINT_INTERVAL": "0.1"}
    server = live_server(engine=True, models_yaml=SLOW_YAML, env=env)
    with server.client() as c:
        up = upload(c, jsonl([chat_line(f"r{i}") for i in range(N)]))
        created = c.post("/v1/batches", json={"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}).json()
        batch = wait_batch(c, created["id"], until=("in_progress",))
        out_id = batch["output_file_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/files/{out_id}").json()["bytes"] < 2000:  # a few checkpointed rows
            assert time.monotonic() < deadline
            time.sleep(0.05)
        engine_pid = c.get("/health").json()["engine"]["pid"]
    # Power cut: the API and the engine die at once, mid-batch.
    server.proc.kill()
    server.proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(engine_pid, signal.SIGKILL)
    while Path(f"/proc/{engine_pid}").exists() and Path(f"/proc/{engine_pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.05)
    out = server.data_dir / "files" / out_id
    recorded = _recorded_bytes(server.data_dir, out_id)
    assert recorded <= out.stat().st_size and _rows(out.read_bytes()[:recorded])
    _cut_mid_row(out, recorded)  # shorter than the checkpoint, ending inside a row

    again = live_server(engine=True, models_yaml=SLOW_YAML, env=env, data_dir=server.data_dir)
    with again.client() as c:
        done = wait_batch(c, created["id"], timeout=60, until=("completed", "failed", "expired", "cancelled"))
        assert done["status"] == "completed", done
        output = _rows(c.get(f"/v1/files/{done['output_file_id']}/content").content)
        errors = _rows(c.get(f"/v1/files/{done['error_file_id']}/content").content)
    ids = Counter(r["custom_id"] for r in output + errors)
    assert set(ids) == {f"r{i}" for i in range(N)} and max(ids.values()) == 1, ids
    assert done["request_counts"] == {"total": N, "completed": len(output), "failed": len(errors)}
    assert "file shorter than its checkpoint" in again.log.read_text()


def test_run_recovery_cuts_back_to_the_last_whole_row(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - id: sim-chat\n    backend: simulated\n    task: generate\n    max_tokens: 8\n")
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(jsonl([chat_line(f"r{i}") for i in range(N)]))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "runner", "run", "-i", str(inp), "-o", str(out), "--models", str(models)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
    checkpoint = json.loads((tmp_path / ".out.jsonl.runner-checkpoint").read_bytes().partition(b"\n")[0])
    assert checkpoint["output_bytes"] == out.stat().st_size
    _cut_mid_row(out, out.stat().st_size // 2)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    ids = Counter(r["custom_id"] for r in _rows(out.read_bytes()))
    assert set(ids) == {f"r{i}" for i in range(N)} and max(ids.values()) == 1, ids
