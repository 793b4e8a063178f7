"""Ledger: one batch's output and error JSONL files -> appended rows, written custom_ids, progress.

Owned by the writer thread once opened. Opening it is the restart protocol: both files are cut back
to the sizes of the last checkpoint (BatchStore.durable_sizes), so a torn or unrecorded tail is
dropped, and the set of custom_ids already written is rebuilt from what is left. `sync()` fsyncs
both files and returns the Progress to record, so the database never points past durable bytes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from runner.engine.backend import Usage
from runner.store.batches import Progress

logger = logging.getLogger(__name__)

_BUFFER = 1024 * 1024


@dataclass
class Totals:
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def _scan(path: Path, size: int, done: set[str]) -> int:
    """Add the custom_ids of the first `size` bytes of a JSONL file to `done`; return the row count.
    Streams line by line, so a restart of a big batch does not hold its output in memory."""
    rows = 0
    left = size
    with open(path, "rb", buffering=1024 * 1024) as f:
        while left > 0:
            raw = f.readline()
            if not raw:
                break
            left -= len(raw)
            if not raw.strip():
                continue
            try:
                cid = orjson.loads(raw)["custom_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                logger.warning("unreadable row dropped from done-set path=%s", path)
                continue
            if cid not in done:
                done.add(cid)
                rows += 1
    return rows


def _cut(path: Path, size: int) -> int:
    """Truncate to `size` (the checkpoint); return the size kept."""
    path.touch(exist_ok=True)
    actual = path.stat().st_size
    if actual > size:
        os.truncate(path, size)
        return size
    if actual < size:
        logger.warning("file shorter than its checkpoint path=%s size=%d recorded=%d", path, actual, size)
    return actual


class Ledger:
    """Append-only writer of one batch's rows, with the exactly-once check."""

    def __init__(self, *, batch_id: str, model: str, total: int, input_path: Path, output_path: Path,
                 error_path: Path, durable: tuple[int, int], totals: Totals) -> None:
        self.batch_id = batch_id
        self.model = model
        self.total = total
        self.input_path = input_path
        self.paths = (output_path, error_path)
        self.done: set[str] = set()
        out_size = _cut(output_path, durable[0])
        err_size = _cut(error_path, durable[1])
        # Counts come from the rows kept; token usage from the checkpoint that recorded those rows.
        totals.completed = _scan(output_path, out_size, self.done)
        totals.failed = _scan(error_path, err_size, self.done)
        self.totals = totals
        self.sizes = [out_size, err_size]
        # 1 MiB buffers: the writer flushes after each run of messages anyway, and each write()
        # syscall with the default 8 KiB buffer gave the GIL away mid-row (see messages.py).
        self._files: list[IO[bytes]] = [open(output_path, "ab", buffering=_BUFFER),
                                        open(error_path, "ab", buffering=_BUFFER)]
        self.dirty = True
        self.unflushed = False

    @property
    def finished(self) -> bool:
        return self.totals.completed + self.totals.failed >= self.total

    def append(self, custom_id: str, row: bytes, *, ok: bool, usage: Usage | None = None) -> bool:
        """Write one row (row ends with a newline); False, writing nothing, if custom_id is done."""
        if custom_id in self.done:
            logger.warning("duplicate result dropped batch=%s custom_id=%s", self.batch_id, custom_id)
            return False
        which = 0 if ok else 1
        self._files[which].write(row)
        self.sizes[which] += len(row)
        self.done.add(custom_id)
        t = self.totals
        if ok:
            t.completed += 1
        else:
            t.failed += 1
        if usage is not None:
            t.input_tokens += usage.prompt_tokens
            t.cached_tokens += usage.cached_tokens
            t.output_tokens += usage.completion_tokens
            t.reasoning_tokens += usage.reasoning_tokens
        self.dirty = self.unflushed = True
        return True

    def flush(self) -> None:
        if self.unflushed:
            for f in self._files:
                f.flush()
            self.unflushed = False

    def sync(self) -> Progress:
        """fsync both files, then describe what is durable."""
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
        self.unflushed = False
        self.dirty = False
        t = self.totals
        return Progress(completed=t.completed, failed=t.failed, input_tokens=t.input_tokens,
                        cached_tokens=t.cached_tokens, output_tokens=t.output_tokens,
                        reasoning_tokens=t.reasoning_tokens, output_bytes=self.sizes[0],
                        error_bytes=self.sizes[1])

    def close(self) -> None:
        for f in self._files:
            f.close()
