"""HandlePool: the engine's append descriptors for output and error files, a bounded LRU.

Every running batch has an output and an error file. Holding both open for the batch's whole run
(plus its input) is what made a few hundred running batches exhaust a 1,024-descriptor limit and
crash-loop the engine (#14). The pool keeps at most `limit` of them open and closes the least
recently used one when it needs another; a closed file is opened again (O_APPEND) when its batch
next writes. A few batches (the common case) never see an eviction; with many, one eviction costs
an open() and a close() per file per writer flush, while memory and descriptors stay flat.

fsync goes through whatever descriptor the pool has for the file now: on Linux fsync flushes the
file's (the inode's) dirty pages whichever descriptor wrote them, so an eviction never makes a
checkpoint point past durable bytes.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import OrderedDict
from pathlib import Path

MIN_HANDLES = 4
MAX_HANDLES = 128


def handle_limit() -> int:
    """An eighth of the soft RLIMIT_NOFILE, between 4 and 128: the rest is left to SQLite, the
    input readers and the model stack (vLLM's sockets, model shards), which all run in this process.
    128 handles are 64 batches writing without a reopen; 1,024 gives 128, 256 gives 32."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_HANDLES
    return max(MIN_HANDLES, min(MAX_HANDLES, soft // 8))


class HandlePool:
    """Path -> an O_APPEND descriptor, at most `limit` open at once (least recently used closed first)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = max(1, limit if limit is not None else handle_limit())
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._lock = threading.Lock()  # the writer uses it; a ledger is opened and closed elsewhere too
        self.opens = 0  # descriptors opened so far (tests and benchmarks read it)

    def fd(self, path: Path) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                self._fds.move_to_end(path)
                return fd
            while len(self._fds) >= self.limit:
                _, old = self._fds.popitem(last=False)
                os.close(old)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._fds[path] = fd
            self.opens += 1
            return fd

    def write(self, path: Path, data: bytes | bytearray | memoryview) -> None:
        """Append all of `data` (a short write is continued; an error such as ENOSPC raises)."""
        view = memoryview(data)
        while view:
            n = os.write(self.fd(path), view)
            view = view[n:]

    def fsync(self, path: Path) -> None:
        os.fsync(self.fd(path))

    def size(self, path: Path) -> int:
        """The file's size now, through its descriptor (the file it writes to, even if renamed)."""
        return os.fstat(self.fd(path)).st_size

    def release(self, path: Path) -> None:
        with self._lock:
            fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._fds)
