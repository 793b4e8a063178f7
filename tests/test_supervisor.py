"""EngineSupervisor: a dead engine child is restarted after a doubling wait capped by the setting."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from runner import supervisor
from runner.settings import Settings


def _waits(monkeypatch: pytest.MonkeyPatch, settings: Settings, restarts: int) -> tuple[list[float], int]:
    sup = supervisor.EngineSupervisor(settings)
    # A real child process that dies at once, as a crashing engine does.
    monkeypatch.setattr(sup, "command", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        waits.append(delay)
        if len(waits) == restarts:
            sup._stopping = True
        await real_sleep(0)

    monkeypatch.setattr(supervisor.asyncio, "sleep", record)
    asyncio.run(sup.run())
    return waits, sup.restarts


def test_backoff_doubles_from_half_a_second_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    waits, restarts = _waits(monkeypatch, Settings(engine_restart_max_delay=3.0), 5)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert restarts == 5


def test_a_cap_below_the_floor_is_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    waits, _ = _waits(monkeypatch, Settings(engine_restart_max_delay=0.2), 3)
    assert waits == [0.2, 0.2, 0.2]


def test_processes_left_by_a_dead_engine_are_killed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine killed by SIGKILL cannot stop its children (vLLM's EngineCore): the supervisor
    kills its whole process group before it starts the next one (#12)."""
    import os
    import time

    pidfile = tmp_path / "grandchild.pid"
    # A real engine-like child: it starts a long-lived grandchild, then dies without cleaning up.
    child = ("import subprocess, sys, pathlib; p = subprocess.Popen([sys.executable, '-c', "
             "'import time; time.sleep(120)']); pathlib.Path(sys.argv[1]).write_text(str(p.pid)); "
             "import os; os._exit(9)")
    sup = supervisor.EngineSupervisor(Settings(engine_restart_max_delay=0.0))
    monkeypatch.setattr(sup, "command", lambda: [sys.executable, "-c", child, str(pidfile)])
    real_sleep = asyncio.sleep

    async def once(delay: float) -> None:
        sup._stopping = True
        await real_sleep(0)

    monkeypatch.setattr(supervisor.asyncio, "sleep", once)
    asyncio.run(sup.run())
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{grandchild}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # killed; a zombie until its (dead) parent's reaper collects it
        time.sleep(0.05)
    else:
        os.kill(grandchild, 9)
        raise AssertionError("the dead engine's child outlived it")


def test_a_killed_engine_takes_its_process_group_with_it(tmp_path) -> None:
    """`runner engine` leading its own process group (as the supervisor starts it) starts a reaper: SIGKILL the
    engine and every process of its group dies too, as vLLM's EngineCore must (#12)."""
    import os
    import signal
    import subprocess
    import time

    (tmp_path / "models.yaml").write_text("models:\n  - id: sim\n    backend: simulated\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    engine = subprocess.Popen([sys.executable, "-m", "runner", "engine", "--data-dir", str(tmp_path / "data"),
                               "--models", str(tmp_path / "models.yaml")], env=env, process_group=0,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # let it start its reaper
        # Stands in for an EngineCore: a process in the engine's group that would outlive it.
        core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], process_group=engine.pid)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
        # raises TimeoutExpired if the group was not killed; within 3 s, so by the reaper's PDEATHSIG and
        # not its 5 s getppid() backstop
        core.wait(3)
        assert core.returncode == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.pid, signal.SIGKILL)
