"""Lifeline: the engine process and every process it starts die together, however it dies.

vLLM runs its EngineCore (and, with tensor parallelism, workers) in child processes. A SIGKILLed
engine cannot stop them, and an orphaned EngineCore keeps the GPU (or host) memory that the
restarted engine needs (see #12). Two guards, both Linux-only:

- `die_with_parent()`: the kernel SIGKILLs the engine when the API process that started it dies
  (PR_SET_PDEATHSIG), as a kill of the whole server always did.
- `start_reaper()`: a tiny watcher process in the engine's process group. When its parent (the
  engine) is gone, it SIGKILLs the whole group: the EngineCore and workers with it, then itself.
  It runs only when the engine leads its own process group (the supervisor starts it so), so it
  can never kill a shell's group.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# Polls getppid(): it changes when the engine dies (the watcher is re-parented). A pipe would not
# do: a child the engine forks inherits the pipe's write end and keeps it open.
_REAPER = (
    "import os, signal, sys, time\n"
    "engine = int(sys.argv[1])\n"
    "while os.getppid() == engine:\n"
    "    time.sleep(0.2)\n"
    "os.killpg(engine, signal.SIGKILL)\n"
)


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        logger.warning("cannot set PR_SET_PDEATHSIG; the engine may outlive a killed server")
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def start_reaper() -> subprocess.Popen[bytes] | None:
    """Start the watcher (when this process leads its own group); keep the returned handle."""
    if not sys.platform.startswith("linux") or os.getpgid(0) != os.getpid():
        return None
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())], stdin=subprocess.DEVNULL,
                            close_fds=True)
