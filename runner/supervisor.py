"""Engine supervisor: keeps one `runner engine` child process alive beside the API.

The engine is a separate process so that model work never blocks the API and a crash of the
model stack (OOM, CUDA error, SIGKILL) costs only a restart: batches resume from their checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from runner.settings import Settings

logger = logging.getLogger(__name__)


class EngineSupervisor:
    """Starts the engine child, restarts it with backoff when it dies, stops it at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False

    def command(self) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "runner", "engine", "--data-dir", s.data_dir, "--models", s.models_path]
        if s.backend:
            cmd += ["--backend", s.backend]
        return cmd

    def status(self) -> dict[str, Any]:
        alive = self.proc is not None and self.proc.returncode is None
        return {"alive": alive, "pid": self.proc.pid if alive and self.proc else None, "restarts": self.restarts}

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
            try:
                self.proc = await asyncio.create_subprocess_exec(*self.command(), env=os.environ.copy(),
                                                                 preexec_fn=os.setpgrp)
            except Exception:  # a failed spawn must not end supervision silently
                logger.exception("engine could not be started; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)
                continue
            logger.info("engine started pid=%d", self.proc.pid)
            code = await self.proc.wait()
            self._kill_leftovers(self.proc.pid)
            if self._stopping:
                break
            self.restarts += 1
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
        services.engine_status = sup.status
        try:
            yield
        finally:
            await sup.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run
