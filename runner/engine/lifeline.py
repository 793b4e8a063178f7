"""Lifeline: the engine process and every process it starts die together, however it dies.

vLLM runs its EngineCore (and, with tensor parallelism, workers) in child processes. A SIGKILLed
engine cannot stop them, and an orphaned EngineCore keeps the GPU (or host) memory that the
restarted engine needs (see #12). Two guards, both Linux-only:

- `die_with_parent(parent_pid)`: the kernel SIGKILLs the engine when the API process that started it
  dies (PR_SET_PDEATHSIG), as a kill of the whole server always did. PDEATHSIG is armed only once the
  engine has imported its modules, so an API killed before that (the OOM killer picks the biggest
  process, at any moment) is caught by comparing getppid() with the pid the API passed: an orphan is
  adopted by pid 1 *or by a subreaper* (systemd, tini -s, a container runtime), so "getppid() == 1"
  alone let the orphan live and keep engine.lock (#14). A parent-watch thread re-checks in case
  PDEATHSIG was cleared or could not be set: every 5 s when PDEATHSIG is armed, every 0.5 s when not.
- `start_reaper()`: a tiny watcher process in the engine's process group. When its parent (the
  engine) is gone, it SIGKILLs the whole group: the EngineCore and workers with it, then itself.
  It runs only when the engine leads its own process group (the supervisor starts it so), so it
  can never kill a shell's group. It hears of the engine's death from PDEATHSIG (SIGUSR1), and
  re-checks getppid() every 5 s in case (every 0.2 s where PDEATHSIG cannot be set).

Why not poll fast everywhere: on a small CPU box vLLM's OpenMP workers spin on every core, and each
wakeup of another thread stalls them (#16); two watchers polling 7 times a second cost a batch on
two cores about as much as a tenth of a second per minute.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# PDEATHSIG (SIGUSR1) says the engine died; getppid() changing says it too (the watcher is re-parented)
# and backs the signal up. A pipe would not do: a child the engine forks inherits the pipe's write end
# and keeps it open. PDEATHSIG follows the thread that started the watcher: start_reaper is called
# from the engine's main thread, which lives as long as the process.
_REAPER = (
    "import os, signal, sys, time\n"
    "engine = int(sys.argv[1])\n"
    "def reap(*_):\n"
    "    os.killpg(engine, signal.SIGKILL)\n"
    "    os._exit(0)\n"
    "signal.signal(signal.SIGUSR1, reap)\n"
    "every = 0.2\n"
    "try:\n"
    "    import ctypes\n"
    "    if ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGUSR1), 0, 0, 0) == 0:\n"
    "        every = 5.0\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "while os.getppid() == engine:\n"
    "    time.sleep(every)\n"
    "reap()\n"
)
PARENT_CHECK_ARMED = 5.0  # seconds between parent checks when PDEATHSIG is armed (a backstop)
PARENT_CHECK = 0.5  # ... when it could not be set (the watch is all there is)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Die with the API process `parent_pid` (default: the parent now): PDEATHSIG plus a watch thread."""
    expected = parent_pid if parent_pid is not None else os.getppid()
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
        if not armed:
            logger.warning("cannot set PR_SET_PDEATHSIG; relying on the parent watch alone")
    _exit_if_orphaned(expected)  # the parent died before prctl took effect
    every = PARENT_CHECK_ARMED if armed else PARENT_CHECK
    threading.Thread(target=_watch_parent, args=(expected, every), name="engine-parent-watch", daemon=True).start()


def _exit_if_orphaned(expected: int) -> None:
    if os.getppid() != expected:
        logger.error("the API process %d that started this engine is gone; exiting", expected)
        _kill_own_group()


def _watch_parent(expected: int, every: float) -> None:
    while True:
        time.sleep(every)
        _exit_if_orphaned(expected)


def _kill_own_group() -> None:
    """SIGKILL this engine's group (its EngineCore, workers and reaper) when it leads one, else itself."""
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


def start_reaper() -> subprocess.Popen[bytes] | None:
    """Start the watcher (when this process leads its own group); keep the returned handle."""
    if not sys.platform.startswith("linux") or os.getpgid(0) != os.getpid():
        return None
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())], stdin=subprocess.DEVNULL,
                            close_fds=True)
