"""Engine supervisor: keeps one `runner engine` child process alive beside the API.

The engine is a separate process so that model work never blocks the API and a crash of the
model stack (OOM, CUDA error, SIGKILL) costs only a restart: batches resume from their checkpoints.
The engine is told the API's pid (--parent-pid) and dies with it (engine/lifeline.py). A watchdog
reads the engine's heartbeat file and the pending batches; it kills a frozen engine's process group
(the restart loop then starts a new one) and gives /health its reasons (watchdog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from runner.engine.heartbeat import FILENAME as HEARTBEAT_FILE  # stdlib + orjson only, no backends
from runner.engine.heartbeat import read_heartbeat
from runner.settings import Settings
from runner.watchdog import PENDING_SQL, Watchdog

WATCH_INTERVAL = 1.0  # the engine beats every second (heartbeat.INTERVAL): reading it more often finds nothing new
PROGRESS_INTERVAL = 2.0

logger = logging.getLogger(__name__)


class EngineSupervisor:
    """Starts the engine child, restarts it with backoff when it dies, stops it at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self.watch = Watchdog(settings)
        self.heartbeat_path = settings.data_path / HEARTBEAT_FILE

    def command(self) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "runner", "engine", "--data-dir", s.data_dir, "--models", s.models_path,
               "--parent-pid", str(os.getpid())]
        if s.backend:
            cmd += ["--backend", s.backend]
        return cmd

    def status(self) -> dict[str, Any]:
        alive = self.proc is not None and self.proc.returncode is None
        return {"alive": alive, "pid": self.proc.pid if alive and self.proc else None, "restarts": self.restarts,
                "waiting_for_lock": self.watch.waiting_for_lock() if alive else None}

    def health(self) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The engine object and the reasons it is unhealthy (none: healthy) for /health."""
        status = self.status()
        return status, self.watch.reasons(status["alive"])

    async def watch_forever(self, db: Any, model_states: Any) -> None:
        """Heartbeat every WATCH_INTERVAL (a frozen engine is killed), progress every PROGRESS_INTERVAL."""
        next_progress = 0.0
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            proc = self.proc
            if proc is None or proc.returncode is not None:
                continue
            self.watch.heartbeat(await asyncio.to_thread(read_heartbeat, self.heartbeat_path))
            stalled = self.watch.stalled()
            if stalled and not self._stopping:
                logger.error("engine frozen: %s; killing its process group and restarting it", stalled)
                self.watch.killed_frozen(stalled)
                self._kill_leftovers(proc.pid)  # SIGKILL works on a stopped process too
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_INTERVAL
                try:
                    rows = await asyncio.to_thread(db.query, PENDING_SQL)
                    states = await asyncio.to_thread(model_states.all)
                except sqlite3.Error:  # busy or closing: look again next time
                    continue
                blocked = {m for m, st in states.items() if st.get("state") in ("load_failed", "stopped")}
                self.watch.observe(rows, blocked)

    async def run(self) -> None:
        cap = max(0.0, self.settings.engine_restart_max_delay)
        floor = min(0.5, cap)
        backoff = floor
        while not self._stopping:
            started = time.monotonic()
            # A process group of its own, so everything it started (vLLM's EngineCore and workers) can be
            # killed with it: a SIGKILLed engine cannot stop its children, and an orphaned EngineCore
            # would keep the GPU (or host) memory the next engine needs (see #12). preexec_fn, not
            # process_group=0: uvloop's subprocess_exec refuses the newer keyword.
            with contextlib.suppress(OSError):
                self.heartbeat_path.unlink()  # the last engine's beats are not this one's
            try:
                self.proc = await asyncio.create_subprocess_exec(*self.command(), env=os.environ.copy(),
                                                                 preexec_fn=os.setpgrp)
            except Exception:  # a failed spawn must not end supervision silently
                logger.exception("engine could not be started; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)
                continue
            logger.info("engine started pid=%d", self.proc.pid)
            self.watch.started(self.proc.pid)
            code = await self.proc.wait()
            self._kill_leftovers(self.proc.pid)
            if self._stopping:
                break
            self.restarts += 1
            self.watch.exited(code)
            if time.monotonic() - started > 30:
                backoff = floor  # it ran a while: a fresh failure, not a crash loop
            logger.warning("engine exited code=%s; restarting in %.1fs (restart %d)", code, backoff, self.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cap)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        logger.info("[shutdown] stopping engine pid=%d", proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._kill_leftovers(proc.pid)

    @staticmethod
    def _kill_leftovers(pgid: int) -> None:
        """SIGKILL what is left of the dead engine's process group (its group id is its pid)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            logger.warning("killed processes left by the engine pgid=%d", pgid)


def engine_supervisor(settings: Settings) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def run(services: Any) -> AsyncIterator[None]:
        sup = EngineSupervisor(settings)
        task = asyncio.create_task(sup.run())
        watcher = asyncio.create_task(sup.watch_forever(services.db, services.model_states))
        services.engine_status = sup.status
        services.engine_health = sup.health
        try:
            yield
        finally:
            await sup.stop()
            for t in (task, watcher):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    return run

