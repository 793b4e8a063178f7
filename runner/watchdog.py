"""Watchdog: the supervisor's judgement of the engine for /health, from outside the engine process.

An engine can be alive and useless. Each of these makes /health answer 503 `unhealthy`, with a
reason carrying a stable code (runner/error_codes.py) that monitoring can match on:

- engine_frozen: its heartbeat file (runner/engine/heartbeat.py) is older than
  RUNNER_ENGINE_STALL_TIMEOUT, or its writer thread has not come back to its queue for that long (a
  freeze while holding SQLite's write lock). The supervisor then SIGKILLs its process group and
  starts a new one; the reason stays until the new engine's first heartbeat.
- engine_crash_loop: 3 restarts within RUNNER_ENGINE_CRASH_LOOP_WINDOW.
- engine_waiting_for_lock: waiting for engine.lock longer than RUNNER_ENGINE_STALL_TIMEOUT; the
  message names the holder's pid.
- engine_no_progress: batches are pending (in_progress, cancelling, finalizing) and no line of them
  finished, and none ended, for RUNNER_ENGINE_PROGRESS_TIMEOUT. Batches of a model that /health
  already shows as failed to load or stopped are left out: that is `degraded`, not a stuck engine.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from runner.settings import Settings

CRASH_LOOP_RESTARTS = 3
# Before its first heartbeat an engine is still importing and opening its stores; give it this long
# at least, so a short stall timeout never kills an engine that is merely starting on a busy host.
STARTUP_GRACE = 30.0

PENDING_SQL = ("SELECT id, model, completed + failed AS done FROM batches"
               " WHERE status IN ('in_progress', 'cancelling', 'finalizing')")


class Watchdog:
    def __init__(self, settings: Settings) -> None:
        self.stall = settings.engine_stall_timeout
        self.progress_timeout = settings.engine_progress_timeout
        self.window = settings.engine_crash_loop_window
        self.restarts: deque[float] = deque()  # monotonic times of engine deaths that led to a restart
        self.last_exit: int | None = None
        self.pid: int | None = None
        self.started_wall = 0.0
        self.beat: dict[str, Any] | None = None  # the current engine's last heartbeat record
        self.frozen: str | None = None  # set when a frozen engine was killed, until its successor beats
        self.pending: dict[str, int] = {}  # batch id -> lines done, at the last progress
        self.progress_at = time.monotonic()

    # -- engine lifecycle (the supervisor calls these) -----------------------------------------------
    def started(self, pid: int) -> None:
        self.pid, self.started_wall, self.beat = pid, time.time(), None

    def exited(self, code: int | None) -> None:
        self.restarts.append(time.monotonic())
        self.last_exit = code

    def heartbeat(self, record: dict[str, Any] | None) -> None:
        if record is not None and record.get("pid") == self.pid:
            self.beat = record
            self.frozen = None

    def stalled(self, now: float | None = None) -> str | None:
        """Why the running engine counts as frozen (a message), or None."""
        now = time.time() if now is None else now
        if self.pid is None:
            return None
        if self.beat is None:
            silent = now - self.started_wall
            limit = max(self.stall, STARTUP_GRACE)
            return f"engine pid {self.pid} has sent no heartbeat {silent:.0f} s after it started" \
                if silent > limit else None
        silent = now - float(self.beat.get("at") or 0)
        if silent > self.stall:
            return f"engine pid {self.pid} has sent no heartbeat for {silent:.0f} s"
        writer = float(self.beat.get("writer_age") or 0)
        if writer > 0 and writer + silent > self.stall:
            return f"engine pid {self.pid}'s writer thread has been stuck for {writer + silent:.0f} s"
        return None

    def killed_frozen(self, message: str) -> None:
        self.frozen = message

    # -- progress ------------------------------------------------------------------------------------
    def observe(self, rows: list[Any], blocked_models: set[str], now: float | None = None) -> None:
        """Feed the pending batches (PENDING_SQL rows); a finished line or an ended batch is progress."""
        now = time.monotonic() if now is None else now
        pending = {r["id"]: int(r["done"]) for r in rows if (r["model"] or "") not in blocked_models}
        if not pending or any(bid not in pending or pending[bid] > done for bid, done in self.pending.items()):
            self.progress_at = now
        elif not self.pending:
            self.progress_at = now  # work just arrived: the clock starts now
        self.pending = pending

    # -- the verdict ---------------------------------------------------------------------------------
    def waiting_for_lock(self) -> dict[str, Any] | None:
        if self.beat is None or self.beat.get("phase") != "waiting_for_lock":
            return None
        wait = self.beat.get("waiting_for_lock")
        return wait if isinstance(wait, dict) else None

    def reasons(self, alive: bool) -> list[dict[str, str]]:
        now = time.monotonic()
        reasons: list[dict[str, str]] = []
        stalled = self.stalled() if alive else None
        if self.frozen or stalled:
            reasons.append({"code": "engine_frozen", "message": str(self.frozen or stalled)})
        while self.restarts and now - self.restarts[0] > self.window:
            self.restarts.popleft()
        if len(self.restarts) >= CRASH_LOOP_RESTARTS:
            reasons.append({"code": "engine_crash_loop",
                            "message": f"the engine restarted {len(self.restarts)} times in the last "
                                       f"{self.window:.0f} s (last exit code {self.last_exit})"})
        wait = self.waiting_for_lock() if alive else None
        if wait is not None and time.time() - float(wait.get("since") or time.time()) > self.stall:
            orphan = " (an orphan: its API is gone; it is being killed)" if wait.get("holder_orphaned") else ""
            reasons.append({"code": "engine_waiting_for_lock",
                            "message": f"the engine waits for engine.lock, held by pid "
                                       f"{wait.get('holder_pid')}{orphan}"})
        idle = now - self.progress_at
        if self.pending and idle > self.progress_timeout:
            n = len(self.pending)
            reasons.append({"code": "engine_no_progress",
                            "message": f"{n} batch{'es' if n != 1 else ''} pending and no line finished for "
                                       f"{idle:.0f} s"})
        return reasons
