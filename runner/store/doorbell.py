"""Doorbell: the API tells the engine "a batch started or a cancel came in", across processes.

SQLite has no cross-process notification, so the engine's feeder used to look at the database's
data_version every 10 ms. That cost about 3% of a core with nothing to do and stole the same from a
busy CPU engine (#16: on a 2-core box every cycle runner spends is one the model's kernels lose).
Instead the engine listens on a FIFO in the data directory and the API rings it after the commits
the engine must act on at once; the feeder's timed poll (RUNNER_POLL_INTERVAL) stays as the backstop
for anything that does not ring (expiries, a ring lost to a full pipe, a data dir on a filesystem
without FIFOs).

Ringing never blocks and never fails the caller: no engine listening (ENXIO), no FIFO yet (ENOENT)
and a pipe already full of unread rings (EAGAIN: a wake is pending anyway) are all fine.

The other way round, `api.bell`: the engine rings it after it ends a batch, and the API's webhook
worker (listening on its event loop, listen_on_loop) sends the batch's webhook event at once
instead of at its next timed look at the outbox (RUNNER_WEBHOOK_POLL_INTERVAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

BELL_FILE = "engine.bell"
API_BELL_FILE = "api.bell"


class Doorbell:
    """A named pipe: ring() from any process, listen() in the one engine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def ring(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # ENXIO: no engine listens; ENOENT: none has yet; the engine's poll finds the change
        try:
            os.write(fd, b"\0")
        except OSError:
            pass  # EAGAIN: rings the engine has not read yet are already waiting
        finally:
            os.close(fd)

    def listen(self, on_ring: Callable[[], None]) -> bool:
        """Call `on_ring` (from a thread of its own) each time the bell rings; False where no FIFO
        can be made here (the caller then keeps checking often)."""
        try:
            self._fd = self._open(0)
        except OSError as exc:
            logger.warning("no doorbell at %s (%s); the engine checks for new batches every 10 ms instead",
                           self.path, exc)
            return False
        self._thread = threading.Thread(target=self._listen, args=(self._fd, on_ring), name="engine-doorbell",
                                        daemon=True)
        self._thread.start()
        return True

    def _open(self, flags: int) -> int:
        try:
            os.mkfifo(self.path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                os.unlink(self.path)  # a stray file where the bell goes: runner owns that name
                os.mkfifo(self.path, 0o600)
        # O_RDWR: the pipe always has a writer (this process), so reads block (or, non-blocking,
        # find nothing) instead of seeing end-of-file whenever the last ringer closes it.
        return os.open(self.path, os.O_RDWR | flags)

    def listen_on_loop(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> bool:
        """Call `on_ring` on `loop` each time the bell rings (no thread: the loop watches the pipe);
        False where no FIFO can be made here. close_on_loop(loop) stops it."""
        try:
            self._fd = fd = self._open(os.O_NONBLOCK)
        except OSError as exc:
            logger.warning("no doorbell at %s (%s); relying on the timed poll", self.path, exc)
            return False

        def readable() -> None:
            with contextlib.suppress(OSError):  # EAGAIN: drained
                while os.read(fd, 4096):  # every ring so far: one call covers them all
                    pass
            on_ring()

        loop.add_reader(fd, readable)
        return True

    def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)

    def _listen(self, fd: int, on_ring: Callable[[], None]) -> None:
        while not self._closed.is_set():
            try:
                os.read(fd, 4096)  # every ring so far: one wake covers them all
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return  # closed under us
            if not self._closed.is_set():
                on_ring()

    def close(self) -> None:
        """Stop listening: wake the reading thread, then close the pipe."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            os.write(fd, b"\0")
        if self._thread is not None:
            self._thread.join(5.0)  # before the close, so it can never read a reused descriptor
        os.close(fd)
