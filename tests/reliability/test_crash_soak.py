"""Crash soak: a real `runner serve` with a slowed-down simulated model, SIGKILLed at random moments.

1. engine kills: 3 batches run at once while the engine child is SIGKILLed (the supervisor restarts it).
2. whole-server kills: the process group (API + engine) is SIGKILLed and `runner serve` restarted
   on the same data dir.
3. kill mid-upload (no file row, no file outside data/files/.tmp, which the restart cleans) and kill
   right after POST /v1/batches returned (the batch still validates and completes).

After each: every input custom_id exactly once across output+error files, request_counts add up,
every line of both files is whole JSON (no torn line), and GET /v1/files/{id}/content equals the
bytes on disk. Each test prints one summary line (see it with `pytest -s`).

Environment:
- RUNNER_SOAK_KILLS=N      engine kills in test 1 (default 20); test 2 gets max(5, N // 4).
                           The long soak: RUNNER_SOAK_KILLS=60 pytest -m slow -s tests/reliability/test_crash_soak.py
- RUNNER_SOAK_SEED=S       seed of the kill-timing RNG (default 1234).
- RUNNER_SOAK_REAL_BACKOFF=1  keep the supervisor's default restart backoff (0.5 s doubling to 10 s).
                           By default the server runs with RUNNER_ENGINE_RESTART_MAX_DELAY=0.5, so
                           20 kills fit in the CI time budget.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .helpers import chat_line, free_port, jsonl

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("RUNNER_SOAK_KILLS", "20"))
SERVER_KILLS = max(5, KILLS // 4)
SEED = int(os.environ.get("RUNNER_SOAK_SEED", "1234"))
REAL_BACKOFF = os.environ.get("RUNNER_SOAK_REAL_BACKOFF") == "1"
KEY = "sk-soak"
AUTH = {"Authorization": f"Bearer {KEY}"}

MODELS_YAML = """\
models:
  - id: sim-soak
    backend: simulated
    max_tokens: 16
    engine_args: {tokens_per_second: 900, max_inflight: 32}
"""

class Soak:
    """One data dir; `start()` (re)starts `runner serve` on it in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.models = tmp / "models.yaml"
        self.models.write_text(MODELS_YAML)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 40.0) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        env.update(
            {
                "RUNNER_API_KEYS": KEY,
                "RUNNER_RATE_LIMIT": "0",
                "RUNNER_LOG_LEVEL": "warning",
                "RUNNER_CHECKPOINT_INTERVAL": "0.1",
                "RUNNER_POLL_INTERVAL": "0.1",
            }
        )
        if not REAL_BACKOFF:
            env["RUNNER_ENGINE_RESTART_MAX_DELAY"] = "0.5"  # 20 kills would otherwise sleep ~3 min
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data), "--models", str(self.models)]
        cmd = [sys.executable, "-m", "runner", *args]
        log = open(self.tmp / f"server-{self.starts}.log", "wb")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.engine_pid() is not None:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start in {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        return (self.tmp / f"server-{self.starts - 1}.log").read_text(errors="replace")[-3000:]

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/health", timeout=5).json())

    def engine_pid(self) -> int | None:
        engine = self.health().get("engine") or {}
        return int(engine["pid"]) if engine.get("alive") and engine.get("pid") else None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=30.0)

    def kill_all(self) -> None:
        """SIGKILL the whole process group (API + engine) and wait until it is gone."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the engine child (reparented) must be gone too
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError("process group still alive 10 s after SIGKILL")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill_all()


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    s = Soak(tmp_path)
    try:
        yield s
    finally:
        s.stop()
        if s.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.proc.pid, signal.SIGKILL)


# -- helpers ---------------------------------------------------------------------------------------
def _submit(c: httpx.Client, name: str, n: int, created: list[str] | None = None) -> tuple[str, list[str]]:
    ids = [f"{name}-{i}" for i in range(n)]
    body = jsonl([chat_line(cid, model="sim-soak") for cid in ids])
    r = c.post("/v1/files", files={"file": (f"{name}.jsonl", body, "application/jsonl")}, data={"purpose": "batch"})
    assert r.status_code == 200, r.text
    r = c.post(
        "/v1/batches",
        json={"input_file_id": r.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert r.status_code == 200, r.text
    if created is not None:
        created.append(r.json()["status"])
    return r.json()["id"], ids


def _wait_completed(soak: Soak, batch_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with soak.client() as c:
        while True:
            batches = [c.get(f"/v1/batches/{b}").json() for b in batch_ids]
            if all(b["status"] == "completed" for b in batches):
                return batches
            if time.monotonic() > deadline:
                raise AssertionError(
                    "batches stuck: " + repr([(b["id"], b["status"], b["request_counts"]) for b in batches])
                )
            time.sleep(0.2)


def _check(soak: Soak, batch: dict[str, Any], ids: list[str]) -> tuple[int, int, int]:
    """Whole-line, served-equals-disk and count checks of one finished batch; returns
    (lines, lost, duplicated) for _report, which fails on lost or duplicated lines."""
    seen: list[str] = []
    with soak.client() as c:
        for key in ("output_file_id", "error_file_id"):
            fid = batch[key]
            if fid is None:
                continue
            r = c.get(f"/v1/files/{fid}/content")
            assert r.status_code == 200, r.text
            disk = (soak.data / "files" / fid).read_bytes()
            assert r.content == disk, f"{key} {fid}: served bytes differ from disk"
            assert c.get(f"/v1/files/{fid}").json()["bytes"] == len(disk)
            assert disk == b"" or disk.endswith(b"\n"), f"{key} {fid}: torn last line"
            for i, line in enumerate(disk.splitlines()):
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise AssertionError(f"{key} {fid} line {i}: torn/invalid JSON {line[:200]!r}") from e
                seen.append(row["custom_id"])
    counts: dict[str, int] = {}
    for cid in seen:
        counts[cid] = counts.get(cid, 0) + 1
    lost = sum(1 for cid in ids if cid not in counts)
    dup = sum(n - 1 for n in counts.values() if n > 1)
    extra = set(counts) - set(ids)
    assert not extra, f"unknown custom_ids {sorted(extra)[:5]}"
    rc = batch["request_counts"]
    assert rc["total"] == len(ids) and rc["completed"] + rc["failed"] == rc["total"], rc
    return len(seen), lost, dup


def _report(name: str, kills: int, results: list[tuple[int, int, int]], started: float, extra: str = "") -> None:
    """Print the summary line, then fail on any lost or duplicated line."""
    lines = sum(r[0] for r in results)
    lost = sum(r[1] for r in results)
    dup = sum(r[2] for r in results)
    print(
        f"\n[crash-soak] {name}: kills survived={kills} lines={lines} lost={lost} duplicated={dup} "
        f"time={time.monotonic() - started:.1f}s seed={SEED}{extra}"
    )
    assert lost == 0 and dup == 0, f"{name}: {lost} lines lost, {dup} duplicated (per batch: {results})"


# -- 1. engine kills -------------------------------------------------------------------------------
def test_engine_sigkill_soak(soak: Soak) -> None:
    t0 = time.monotonic()
    rng = random.Random(SEED)
    soak.start()
    n_lines = 100 + 12 * KILLS  # enough work that the batches are still running at the last kill
    with soak.client() as c:
        jobs = [_submit(c, f"e{j}", n_lines) for j in range(3)]
        kills, mid_run, with_progress, last_done = 0, 0, 0, -1
        deadline = time.monotonic() + 60 + (14 if REAL_BACKOFF else 6) * KILLS
        while kills < KILLS:
            assert time.monotonic() < deadline, f"only {kills} kills before the deadline"
            pid = soak.engine_pid()
            if pid is None:
                time.sleep(0.05)
                continue
            time.sleep(rng.uniform(0.05, 1.6))
            now = [c.get(f"/v1/batches/{b}").json() for b, _ in jobs]
            statuses = {b["status"] for b in now}
            done = sum(b["request_counts"]["completed"] + b["request_counts"]["failed"] for b in now)
            if statuses == {"completed"}:
                break  # out of work: the check below fails on kills < KILLS
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kills += 1
            mid_run += "in_progress" in statuses
            with_progress += done > last_done  # checkpointed lines moved since the previous kill
            last_done = done
            while soak.engine_pid() in (pid, None):  # wait for the restarted engine
                time.sleep(0.05)
    assert kills >= KILLS, f"batches finished after {kills} kills; give them more lines"
    batches = _wait_completed(soak, [b for b, _ in jobs], timeout=120)
    results = [_check(soak, b, ids) for b, (_, ids) in zip(batches, jobs, strict=True)]
    restarts = soak.health()["engine"]["restarts"]
    assert restarts >= kills
    _report(
        "engine SIGKILL",
        kills,
        results,
        t0,
        f" in_progress_at_kill={mid_run} after_progress={with_progress} restarts={restarts}",
    )


# -- 2. whole-server kills -------------------------------------------------------------------------
def test_server_sigkill_soak(soak: Soak) -> None:
    t0 = time.monotonic()
    rng = random.Random(SEED + 1)
    soak.start()
    n_lines = 100 + 40 * SERVER_KILLS
    with soak.client() as c:
        jobs = [_submit(c, f"s{j}", n_lines) for j in range(3)]
    kills, mid_run, with_progress, last_done = 0, 0, 0, -1
    for _ in range(SERVER_KILLS):
        time.sleep(rng.uniform(0.2, 2.5))
        with soak.client() as c:
            now = [c.get(f"/v1/batches/{b}").json() for b, _ in jobs]
        done = sum(b["request_counts"]["completed"] + b["request_counts"]["failed"] for b in now)
        soak.kill_all()
        kills += 1
        mid_run += any(b["status"] == "in_progress" for b in now)
        with_progress += done > last_done
        last_done = done
        soak.start()
    assert mid_run == kills, "a batch finished before the last kill; give them more lines"
    batches = _wait_completed(soak, [b for b, _ in jobs], timeout=120)
    results = [_check(soak, b, ids) for b, (_, ids) in zip(batches, jobs, strict=True)]
    _report("server SIGKILL", kills, results, t0, f" in_progress_at_kill={mid_run} after_progress={with_progress}")


# -- 3. kill during upload and right after batch creation ------------------------------------------
def _slow_multipart(boundary: str, total: int, sent: list[int]) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        f"Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    line = orjson.dumps(chat_line("x" * 20)) + b"\n"
    chunk = line * (256 * 1024 // len(line))
    while sent[0] < total:
        yield chunk
        sent[0] += len(chunk)
        time.sleep(0.01)
    yield f"\r\n--{boundary}--\r\n".encode()


def test_kill_during_upload_and_batch_creation(soak: Soak) -> None:
    t0 = time.monotonic()
    soak.start()
    with soak.client() as c:
        before = {f["id"] for f in c.get("/v1/files").json()["data"]}
    # (a) SIGKILL mid-upload of a 20 MB file streamed slowly
    sent = [0]
    boundary = "soakboundary7c1f"
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            with httpx.Client(base_url=soak.url, headers=AUTH, timeout=60.0) as c:
                c.post(
                    "/v1/files",
                    content=_slow_multipart(boundary, 20 * 1024 * 1024, sent),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
        except httpx.HTTPError as e:  # expected: the server dies under it
            errors.append(e)

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    while sent[0] < 6 * 1024 * 1024:
        assert t.is_alive(), "upload finished before the kill"
        time.sleep(0.01)
    tmp_files = list((soak.data / "files" / ".tmp").iterdir())
    assert tmp_files, "no temp file while the upload streams"
    soak.kill_all()
    t.join(30)
    assert errors, "the upload did not fail although the server was killed"
    soak.start()
    with soak.client() as c:
        after = {f["id"] for f in c.get("/v1/files").json()["data"]}
    assert after == before, f"half upload visible: {after - before}"
    on_disk = {p.name for p in (soak.data / "files").iterdir() if p.name != ".tmp"}
    assert on_disk <= before, f"orphan files in data/files: {on_disk - before}"
    assert not list((soak.data / "files" / ".tmp").iterdir()), "temp upload not cleaned at restart"
    kills = 1

    # (b) SIGKILL right after POST /v1/batches returned
    created: list[str] = []
    with soak.client() as c:
        batch_id, ids = _submit(c, "v", 300, created)
    soak.kill_all()
    kills += 1
    soak.start()
    batches = _wait_completed(soak, [batch_id], timeout=60)
    results = [_check(soak, batches[0], ids)]
    _report(
        "upload/create SIGKILL",
        kills,
        results,
        t0,
        f" upload_bytes_at_kill={sent[0]} batch_status_at_kill={created[0]}",
    )
