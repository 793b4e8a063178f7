"""Window: the engine's bound on lines in flight (read from the input, not yet handed to the writer).

The feeder takes the free slots before each feeding pass (and gives back those it did not fill); the
loop gives a line's slot back when its result (or its abort) leaves the loop, which wakes the feeder
if it sleeps. One window per loaded model, sized by settings.max_inflight or the backend's
default_max_inflight. Memory stays flat whatever the input size, and a crash redoes at most the
window plus the lines written since the last checkpoint.
"""

from __future__ import annotations

import threading


class Window:
    """A counting bound; thread-safe. Freed room sets `wake` (the feeder's EngineState.wake)."""

    def __init__(self, capacity: int, wake: threading.Event | None = None) -> None:
        self.capacity = max(1, capacity)
        self._used = 0
        self._lock = threading.Lock()
        self._wake = wake

    @property
    def used(self) -> int:
        return self._used

    def take_up_to(self, n: int) -> int:
        """Take as many slots as are free, at most n; return how many were taken."""
        with self._lock:
            got = max(0, min(n, self.capacity - self._used))
            self._used += got
            return got

    def give(self, n: int = 1, *, wake: bool = True) -> None:
        """Free n slots. `wake=False` for the feeder handing back room it took but did not fill:
        waking itself for that would spin it."""
        if n <= 0:
            return
        with self._lock:
            self._used = max(0, self._used - n)
        if wake and self._wake is not None:
            self._wake.set()
