"""The engine's heartbeat: a small JSON file the supervisor reads to tell a frozen engine from a busy one.

Written every second by a thread of its own, but it reports the *writer* thread's liveness: the
writer owns every SQLite write and output-file fsync, so an engine frozen while holding the write
lock (a hung disk, a deadlock, SIGSTOP) is one whose writer has stopped coming back to its queue.
The writer returns to its queue at least every RUNNER_CHECKPOINT_INTERVAL (a timed get), so
`writer_age` stays small while it works. A process stopped as a whole stops the file too: the
supervisor also looks at the file's own time. The loop thread is not watched: a model load or a long
generation step legitimately keeps it busy for minutes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

INTERVAL = 1.0
FILENAME = "engine.heartbeat"


class WatchedQueue(queue.Queue[object]):
    """A queue that records when its consumer last came back for an item (the writer's pulse)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_get = time.monotonic()
        self.waiting = False  # inside get(): idle, not stuck, however long it waits

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        self.waiting = True
        try:
            return super().get(block, timeout)
        finally:
            self.waiting = False
            self.last_get = time.monotonic()

    def consumer_age(self) -> float:
        """Seconds the consumer has been away from the queue (0 while it waits in get())."""
        return 0.0 if self.waiting else max(0.0, time.monotonic() - self.last_get)


class Heartbeat(threading.Thread):
    """Writes {"pid", "at", "phase", "writer_age", "waiting_for_lock"} to `path` every INTERVAL.

    Overwritten in place, padded to SIZE bytes: the file's one block is allocated once, so a full
    disk never stops the beat (a stale beat gets the engine killed). A reader that catches a write
    half done gets unparsable JSON and keeps the beat before it."""

    SIZE = 1024

    def __init__(self, path: Path, report: Callable[[], dict[str, Any]]) -> None:
        super().__init__(name="engine-heartbeat", daemon=True)
        self.path = path
        self.report = report
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def beat(self) -> None:
        record = orjson.dumps({"pid": os.getpid(), "at": time.time(), **self.report()})
        with contextlib.suppress(OSError):
            os.pwrite(self.fd, record.ljust(self.SIZE), 0)

    def run(self) -> None:
        while True:
            self.beat()
            time.sleep(INTERVAL)


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
