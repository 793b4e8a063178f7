"""#14 fault 6: SIGKILL of the API process alone (what the OOM killer does) must not leave the engine
running. An orphaned engine kept engine.lock, and a restarted server's engine waited for it forever
while /health said alive.

Real processes throughout: `runner serve` with its engine (simulated backend), killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import LiveServer, chat_line, jsonl, upload, wait_batch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no lock and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group `pgid`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(d.name))
    return found


def wait_until(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def engine_pid(server: LiveServer) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        engine = httpx.get(server.url + "/health", timeout=2).json().get("engine") or {}
        return engine.get("pid") if engine.get("alive") else None
    return None


def run_batch(server: LiveServer, n: int = 3, timeout: float = 20.0) -> dict[str, object]:
    with server.client() as c:
        f = upload(c, jsonl([chat_line(f"r{i}") for i in range(n)]))
        assert f.status_code == 200, f.text
        b = c.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})
        assert b.status_code == 200, b.text
        return wait_batch(c, b.json()["id"], timeout=timeout, until=("completed", "failed", "expired", "cancelled"))


def test_sigkill_of_the_api_takes_the_engine_with_it(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(engine=True)
    pid = wait_until(lambda: engine_pid(server), 20, "engine alive")
    assert isinstance(pid, int)
    # The engine leads its own process group (its reaper lives there too).
    assert os.getpgid(pid) == pid
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    wait_until(lambda: not group_alive(pid), 5, f"engine pid {pid} and its group gone after the API's SIGKILL")
    # A server restarted on the same data dir gets the engine lock and runs a new batch.
    again = live_server(engine=True, data_dir=server.data_dir)
    wait_until(lambda: engine_pid(again), 20, "restarted engine alive")
    assert run_batch(again)["status"] == "completed"


# A subreaper (systemd, tini -s, a container runtime, a CI runner) adopts orphans instead of pid 1.
# The engine's old check, "getppid() == 1 after prctl", then missed an API that died before the
# engine reached prctl: the orphan lived on and held engine.lock.
_SUBREAPER = textwrap.dedent("""
    import ctypes, json, os, signal, subprocess, sys, time
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    api = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = None
    deadline = time.monotonic() + 30
    while engine is None and time.monotonic() < deadline:
        try:
            kids = open(f"/proc/{api.pid}/task/{api.pid}/children").read().split()
        except OSError:
            kids = []
        engine = int(kids[0]) if kids else None
        time.sleep(0.002)
    # Kill the API while its engine is still starting (importing), before it can set PDEATHSIG.
    os.kill(api.pid, signal.SIGKILL)
    api.wait()
    def alive(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    gone_after = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if not alive(engine):
            gone_after = time.monotonic() - t0
            break
        time.sleep(0.05)
    if gone_after is None:
        os.killpg(engine, signal.SIGKILL)  # clean up the orphan this test made
    print(json.dumps({"engine": engine, "gone_after": gone_after}))
""")


def test_engine_exits_when_the_api_dies_while_it_starts_under_a_subreaper(tmp_path: Path) -> None:
    from .helpers import SIM_MODELS_YAML, free_port  # noqa: PLC0415

    (tmp_path / "models.yaml").write_text(SIM_MODELS_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(RUNNER_BACKEND="simulated", RUNNER_LOG_LEVEL="warning", RUNNER_RATE_LIMIT="0")
    serve = [sys.executable, "-m", "runner", "serve", "--port", str(free_port()), "--data-dir",
             str(tmp_path / "data"), "--models", str(tmp_path / "models.yaml")]
    out = subprocess.run([sys.executable, "-c", _SUBREAPER, *serve], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["engine"], result
    assert result["gone_after"] is not None, f"the orphaned engine {result['engine']} outlived its API"
    assert result["gone_after"] < 5, result


def _hold_lock(path: Path) -> subprocess.Popen[bytes]:
    """Another process that holds engine.lock (like a second server on the same data dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'ab')\n"
            "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_an_engine_waiting_for_the_lock_says_so_in_health(live_server: Callable[..., LiveServer],
                                                         tmp_path: Path) -> None:
    data = tmp_path / "shared-data"
    holder = _hold_lock(data / "engine.lock")
    try:
        server = live_server(engine=True, data_dir=data, env={"RUNNER_ENGINE_STALL_TIMEOUT": "2"})

        def waiting() -> dict[str, object] | None:
            r = httpx.get(server.url + "/health", timeout=2)
            body = r.json()
            if r.status_code == 503 and any(x["code"] == "engine_waiting_for_lock" for x in body["reasons"]):
                return dict(body)
            return None

        body = wait_until(waiting, 15, "/health reports the engine waiting for engine.lock")
        assert isinstance(body, dict)
        assert body["status"] == "unhealthy"
        assert body["engine"]["waiting_for_lock"]["holder_pid"] == holder.pid
        reason = next(x for x in body["reasons"] if x["code"] == "engine_waiting_for_lock")
        assert str(holder.pid) in reason["message"]
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the engine takes the lock, /health is ok again and batches run.
    wait_until(lambda: httpx.get(server.url + "/health", timeout=2).status_code == 200, 10, "/health ok again")
    assert run_batch(server)["status"] == "completed"


# An engine left holding engine.lock after its API died, in a state where it cannot die with it
# (an older runner without the parent watch; a process stuck in the kernel): the pid it wrote in
# engine.lock, its API's pid that is gone, and the command line of a `runner engine` on this data dir.
_STALE_HOLDER = textwrap.dedent("""
    import fcntl, json, os, sys, time
    path, dead_api = sys.argv[4], int(sys.argv[5])
    f = open(path + "/engine.lock", "a+b")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    f.truncate(0)
    f.write(json.dumps({"pid": os.getpid(), "parent": dead_api}).encode())
    f.flush()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_an_orphaned_lock_holder_is_killed_by_the_next_engine(live_server: Callable[..., LiveServer],
                                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process is gone: the holder's API
    stale = subprocess.Popen([sys.executable, "-c", _STALE_HOLDER, "runner", "engine", "--data-dir", str(data),
                              str(gone.pid)], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert stale.stdout is not None and stale.stdout.readline().strip() == b"locked"
        server = live_server(engine=True, data_dir=data)
        wait_until(lambda: stale.poll() is not None, 10, "the orphaned lock holder killed")
        assert stale.returncode == -signal.SIGKILL
        assert run_batch(server)["status"] == "completed"
        assert f"whose API pid={gone.pid} is gone; killing it" in server.log.read_text()
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_a_live_lock_holder_that_is_no_engine_is_never_killed(tmp_path: Path) -> None:
    """Detection never kills a process that merely looks orphaned but is no runner engine of this
    data dir (a pid reused by something else)."""
    from runner.engine.engine_lock import _kill_stale  # noqa: PLC0415

    other = subprocess.Popen(["sleep", "30"])
    try:
        assert not _kill_stale({"pid": other.pid, "parent": 1}, tmp_path)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
