"""Window: the engine's bound on lines in flight (read from the input, not yet handed to the writer).

The feeder takes the free slots before each feeding pass (and gives back those it did not fill); the
loop gives a line's slot back when its result (or its abort) leaves the loop, which wakes the feeder
if it sleeps, once a quarter of the window is free (or all of it). One window per loaded model, sized
by settings.max_inflight or the backend's default_max_inflight. Memory stays flat whatever the input
size, and a crash redoes at most the window plus the lines written since the last checkpoint.

Why a low-water mark: waking the feeder for every engine step that finished a line meant a feeding
pass, a Feed and a batch of request preparations per step. On a small CPU box vLLM's OpenMP workers
spin on every core and each wakeup of another thread stalls them (#16), so fewer, larger passes cost
vLLM less. The default window is twice vLLM's max_num_seqs, so with a quarter of it free a full
engine still has three quarters of a step's worth of lines waiting in its own queue.
"""

from __future__ import annotations

import threading


class Window:
    """A counting bound; thread-safe. Freed room sets `wake` (the feeder's EngineState.wake) once at
    least `low_water` slots are free."""

    def __init__(self, capacity: int, wake: threading.Event | None = None) -> None:
        self.capacity = max(1, capacity)
        self.low_water = max(1, self.capacity // 4)
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
            free = self.capacity - self._used
        if wake and self._wake is not None and free >= self.low_water:
            self._wake.set()
