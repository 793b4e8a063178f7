"""Lower the CPU priority of the engine's helper threads (RUNNER_HELPER_NICE).

On a small CPU box vLLM's kernels run on every core in OpenMP teams that meet at barriers, so a
runner thread that takes a core for a moment stalls the whole team, not one thread: on 2 cores each
CPU-second of runner's bookkeeping cost about a second of wall time (#16). The feeder and the writer
have slack (the window keeps the engine's queue full; rows wait for the next checkpoint anyway), so
they run niced and fill the gaps the kernels leave. The loop thread, which hands vLLM its requests,
and vLLM's own processes (started from it, so they inherit its priority) keep theirs. Linux only:
there niceness is per thread; elsewhere it would nice the whole process, vLLM included.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)


def nice_this_thread(increment: int) -> None:
    """Add `increment` to the calling thread's niceness (0: leave it); never fails the caller."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:  # a sandbox that forbids it: run at the normal priority
        logger.debug("could not nice thread %s: %s", threading.current_thread().name, exc)
