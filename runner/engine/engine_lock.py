"""engine.lock: one engine per data dir, and a holder that can be told apart from a stale one.

The lock is an flock, which the OS drops when its holder dies, even by SIGKILL. The holder writes
who it is into the file ({"pid", "parent"}: the engine and the API process that started it), so a
waiting engine can say in /health whom it waits for, and tell a live holder (another server's
engine on the same data dir: wait) from a stale one: an engine whose API is gone but that still
runs, for instance frozen (SIGSTOP, a hung disk) so that its own parent watch cannot act. A stale
holder that is a `runner engine` process is SIGKILLed, with its process group (#14).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

logger = logging.getLogger(__name__)

POLL = 0.2


@dataclass
class LockWait:
    """What an engine waiting for engine.lock reports (its heartbeat carries it to /health)."""

    holder_pid: int | None = None
    holder_orphaned: bool = False
    since: float | None = None  # wall clock, when the wait began

    def snapshot(self) -> dict[str, Any] | None:
        if self.since is None:
            return None
        return {"holder_pid": self.holder_pid, "holder_orphaned": self.holder_orphaned, "since": self.since}


def read_holder(path: Path) -> dict[str, Any] | None:
    """The {"pid", "parent"} record the holder wrote, or None (none yet, an older runner, garbage)."""
    try:
        record = orjson.loads(path.read_bytes() or b"null")
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record


def flock_holder(path: Path) -> int | None:
    """The pid /proc/locks names for the flock on `path` (any holder, also one that wrote no record)."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 24052 08:01:1234567 0 EOF" (a "->" marks a waiter: skip it)
        if len(parts) >= 6 and parts[1] == "FLOCK":
            with contextlib.suppress(ValueError, IndexError):
                if int(parts[5].rsplit(":", 1)[1]) == st.st_ino:
                    return int(parts[4])
    return None


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state, ppid, pgrp, ...); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields


def _is_engine(pid: int, data_dir: Path) -> bool:
    """`pid` runs `runner engine` on this data dir (so a reused pid is never killed by mistake)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"runner" not in args or b"engine" not in args or b"--data-dir" not in args:
        return False
    i = args.index(b"--data-dir") + 1
    with contextlib.suppress(IndexError, OSError):
        return Path(os.fsdecode(args[i])).resolve() == data_dir.resolve()
    return False


def holder_orphaned(record: dict[str, Any]) -> bool:
    """The holder runs, but the API that started it is gone (it was re-parented)."""
    fields = _stat(int(record["pid"]))
    parent = record.get("parent")
    return fields is not None and isinstance(parent, int) and int(fields[1]) != parent


def _kill_stale(record: dict[str, Any], data_dir: Path) -> bool:
    pid = int(record["pid"])
    if not _is_engine(pid, data_dir):
        return False
    fields = _stat(pid)
    if fields is None:
        return False
    logger.error("engine.lock is held by engine pid=%d whose API pid=%s is gone; killing it", pid,
                 record.get("parent"))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if int(fields[2]) == pid:
            os.killpg(pid, signal.SIGKILL)  # its EngineCore and workers with it
        else:
            os.kill(pid, signal.SIGKILL)
    return True


def acquire_engine_lock(path: Path, stopping: threading.Event, wait: LockWait) -> IO[bytes] | None:
    """Hold engine.lock (an exclusive flock) and write this engine into it; None if `stopping` was set
    while waiting. `wait` says, while waiting, who holds it."""
    f = open(path, "a+b")  # noqa: SIM115 - held while the engine runs
    logged = False
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            record = read_holder(path)
            if record is None or _stat(int(record["pid"])) is None:
                pid = flock_holder(path)  # no record (yet), or a stale one: ask the kernel
                record = {"pid": pid} if pid is not None else None
            orphaned = record is not None and holder_orphaned(record)
            wait.holder_pid = int(record["pid"]) if record else None
            wait.holder_orphaned = orphaned
            if wait.since is None:
                wait.since = time.time()
            if not logged:
                logger.warning("another engine holds %s (pid=%s); waiting", path, wait.holder_pid)
                logged = True
            if record is not None and orphaned:
                _kill_stale(record, path.parent)
            if stopping.wait(POLL):
                f.close()
                return None
    f.truncate(0)
    f.write(orjson.dumps({"pid": os.getpid(), "parent": os.getppid(), "since": time.time()}))
    f.flush()
    wait.holder_pid, wait.holder_orphaned, wait.since = None, False, None
    return f
