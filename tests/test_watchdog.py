"""runner/watchdog.py's verdicts, clock by clock (the real-process tests are in tests/reliability/:
test_frozen_engine.py, test_health.py, test_orphan_engine.py)."""

from __future__ import annotations

import time

from runner.settings import Settings
from runner.watchdog import STARTUP_GRACE, Watchdog


def _dog(**kw: float) -> Watchdog:
    return Watchdog(Settings(**{"engine_stall_timeout": 5.0, "engine_progress_timeout": 10.0,
                                "engine_crash_loop_window": 60.0, **kw}))


def _codes(dog: Watchdog, alive: bool = True) -> list[str]:
    return [r["code"] for r in dog.reasons(alive)]


def test_crash_loop_needs_three_restarts_inside_the_window_and_passes() -> None:
    dog = _dog()
    dog.exited(1)
    dog.exited(1)
    assert _codes(dog) == []
    dog.exited(-9)
    assert _codes(dog) == ["engine_crash_loop"]
    assert "last exit code -9" in dog.reasons(True)[0]["message"]
    dog.restarts = type(dog.restarts)(t - 61 for t in dog.restarts)  # the window has passed
    assert _codes(dog) == []


def test_stall_waits_for_the_first_beat_then_follows_heartbeat_and_writer() -> None:
    dog = _dog()
    dog.started(1234)
    now = time.time()
    assert dog.stalled(now + 6) is None  # still starting: STARTUP_GRACE, not the stall timeout
    assert dog.stalled(now + STARTUP_GRACE + 1) is not None
    dog.heartbeat({"pid": 999, "at": now})  # another engine's beat does not count
    assert dog.beat is None
    dog.heartbeat({"pid": 1234, "at": now, "writer_age": 0.0})
    assert dog.stalled(now + 4) is None
    assert "no heartbeat" in str(dog.stalled(now + 6))
    dog.heartbeat({"pid": 1234, "at": now, "writer_age": 4.0})
    assert "writer thread" in str(dog.stalled(now + 2))
    assert _codes(dog, alive=False) == []  # a dead engine is not frozen (the restart loop has it)


def test_a_killed_frozen_engine_stays_reported_until_its_successor_beats() -> None:
    dog = _dog()
    dog.started(1)
    dog.killed_frozen("engine pid 1 has sent no heartbeat for 6 s")
    dog.started(2)
    assert _codes(dog) == ["engine_frozen"]
    dog.heartbeat({"pid": 2, "at": time.time()})
    assert _codes(dog) == []


def test_progress_counts_finished_lines_and_ended_batches_not_new_batches() -> None:
    dog = _dog()
    dog.observe([{"id": "a", "model": "m", "done": 0}], set(), now=0)
    dog.observe([{"id": "a", "model": "m", "done": 0}, {"id": "b", "model": "m", "done": 0}], set(), now=8)
    assert dog.progress_at == 0  # a new batch is no progress
    dog.observe([{"id": "a", "model": "m", "done": 1}, {"id": "b", "model": "m", "done": 0}], set(), now=9)
    assert dog.progress_at == 9
    dog.observe([{"id": "b", "model": "m", "done": 0}], set(), now=15)
    assert dog.progress_at == 15  # "a" ended
    dog.progress_at = time.monotonic() - 11
    assert _codes(dog) == ["engine_no_progress"]
    # Batches of a model that failed to load are `degraded`, not a stuck engine; nothing pending resets.
    dog.observe([{"id": "b", "model": "m", "done": 0}], {"m"})
    assert _codes(dog) == []


def test_waiting_for_the_lock_is_reported_after_the_stall_timeout() -> None:
    dog = _dog()
    dog.started(7)
    wait = {"holder_pid": 42, "holder_orphaned": False, "since": time.time() - 1}
    dog.heartbeat({"pid": 7, "at": time.time(), "phase": "waiting_for_lock", "waiting_for_lock": wait})
    assert dog.waiting_for_lock() == wait and _codes(dog) == []
    wait["since"] = time.time() - 6
    reasons = dog.reasons(True)
    assert [r["code"] for r in reasons] == ["engine_waiting_for_lock"] and "pid 42" in reasons[0]["message"]
