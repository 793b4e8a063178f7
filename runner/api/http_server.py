"""uvicorn's Server, ticking once a second instead of ten times, and stopping at once on a signal.

uvicorn's main loop wakes every 0.1 s to refresh the Date header (once a second) and to look at its
exit flag. On a small CPU box vLLM's OpenMP workers spin on every core, and each wakeup of another
thread stalls them (#16); an idle team server should cost nothing either. This loop sleeps on an
event that a shutdown signal sets, with a one-second timeout for the Date header, so Ctrl-C and
SIGTERM still stop the server at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from types import FrameType
from typing import Any

import uvicorn

TICK = 1.0  # seconds between ticks: uvicorn refreshes the Date header on every tenth of its own


class QuietServer(uvicorn.Server):
    """uvicorn.Server whose main loop sleeps until a signal, or a second for the Date header."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_now: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_now = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            # uvicorn's on_tick refreshes the Date header when counter % 10 == 0: every tick here
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_now.wait(), TICK)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, event = self._loop, self._exit_now
        if loop is not None and event is not None:
            # a signal handler: call_soon_threadsafe is the one loop call safe from here
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)


def run(app: Any, **kwargs: Any) -> None:
    """uvicorn.run(app, **kwargs) on a QuietServer (one process, no reload, as runner serves)."""
    config = uvicorn.Config(app, **kwargs)
    server = QuietServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn.run's STARTUP_FAILURE
