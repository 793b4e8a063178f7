"""EngineSupervisor: a dead engine child is restarted after a doubling wait capped by the setting."""

from __future__ import annotations

import asyncio
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
