"""Ledger: one batch's output and error JSONL files -> appended rows, written custom_ids, progress.

Owned by the writer thread once opened. Opening it is the restart protocol: both files are cut back
to the sizes of the last checkpoint (BatchStore.durable_sizes), so a torn or unrecorded tail is
dropped, and the set of lines already written is rebuilt from what is left (their custom_ids,
mapped back to input line numbers). `sync()` fsyncs
both files and returns the Progress to record, so the database never points past durable bytes.

A ledger holds no descriptor of its own (#14): rows gather in a buffer per file and go out with
one write per flush through the engine's HandlePool (handles.py), which bounds the open files
however many batches run. Opening a ledger also checks the batch's input file (gone, or another
size than validation read): a damaged input is recorded in `damage`, for the batch to end on, and
never raises out of the engine's threads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from runner.engine.backend import Usage
from runner.engine.handles import HandlePool
from runner.jsonl import InputDamaged, check_size, gone, iter_custom_ids
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


class LineSet:
    """Written line numbers as a bitmap: total/8 bytes per batch, where a set of custom_ids cost
    ~100 bytes a line (100 MB of engine memory for a 1M-line batch)."""

    __slots__ = ("_bits", "count")

    def __init__(self, bits: bytes = b"") -> None:
        self._bits = bytearray(bits)
        self.count = sum(map(int.bit_count, self._bits))

    def add(self, line: int) -> bool:
        """Mark `line`; False if it was already marked."""
        byte, bit = line >> 3, 1 << (line & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        elif self._bits[byte] & bit:
            return False
        self._bits[byte] |= bit
        self.count += 1
        return True

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, int):
            return False
        byte = line >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (line & 7)))

    def __len__(self) -> int:
        return self.count

    def copy(self) -> LineSet:
        return LineSet(bytes(self._bits))

    def to_bytes(self) -> bytes:
        return bytes(self._bits)


def _scan(path: Path, size: int, written: set[str], *, merged: bool = False) -> tuple[int, int]:
    """Add the custom_ids of the first `size` bytes of a JSONL file to `written`; return the
    (ok, error) row counts (all ok unless `merged`: error rows share the output file). Streams line
    by line, so a restart of a big batch does not hold its output in memory."""
    ok = bad = 0
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
                row = orjson.loads(raw)
                cid = row["custom_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                logger.warning("unreadable row skipped while rebuilding the written lines path=%s", path)
                continue
            if cid in written:
                continue
            written.add(cid)
            if merged and not _is_ok(row):
                bad += 1
            else:
                ok += 1
    return ok, bad


def _is_ok(row: Any) -> bool:
    response = row.get("response") if isinstance(row, dict) else None
    return isinstance(response, dict) and response.get("status_code") == 200


def _lines_of(input_path: Path, written: set[str], max_line_bytes: int, size: int | None) -> LineSet:
    """The input line numbers of the written custom_ids (validation made custom_ids unique)."""
    done = LineSet()
    if written:
        for lineno, cid in iter_custom_ids(input_path, max_line_bytes, size=size):
            if cid in written:
                done.add(lineno)
    return done


def _cut(path: Path, size: int | None) -> tuple[int, bool]:
    """Truncate to `size` (the checkpoint; None: no checkpoint, keep every whole row); return the
    size kept and whether the file held everything the checkpoint recorded."""
    path.touch(exist_ok=True)
    actual = path.stat().st_size
    if size is None:
        size = _whole_rows(path, actual)
    if actual > size:
        os.truncate(path, size)
        return size, True
    if actual < size:
        logger.warning("file shorter than its checkpoint path=%s size=%d recorded=%d", path, actual, size)
        whole = _whole_rows(path, actual)  # never append a row onto a cut-off one
        if whole < actual:
            os.truncate(path, whole)
        return whole, False
    return actual, True


def _whole_rows(path: Path, size: int) -> int:
    """The length of the file's prefix that ends with a newline (a torn last row is not counted)."""
    if size == 0:
        return 0
    with open(path, "rb") as f:
        pos = size
        while pos > 0:
            step = min(64 * 1024, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
    return 0


class Ledger:
    """Append-only writer of one batch's rows, with the exactly-once check."""

    def __init__(self, *, batch_id: str, model: str, total: int, input_path: Path, output_path: Path,
                 error_path: Path | None, durable: tuple[int | None, int | None], totals: Totals,
                 max_line_bytes: int = 16 * 1024 * 1024, resume: LineSet | None = None,
                 input_bytes: int | None = None, handles: HandlePool | None = None) -> None:
        """`error_path` None: error rows go into the output file (`runner run` without --errors).
        `durable` None: no checkpoint (keep every whole row). `resume`: the written lines as the
        checkpoint recorded them (with `totals` counted); else they are rebuilt from the rows kept.
        `input_bytes`: the input's size when validated (None: not checked, only its presence).
        `handles`: the engine's shared pool (None: a pool of this ledger's two files)."""
        self.batch_id = batch_id
        self.model = model
        self.total = total
        self.input_path = input_path
        self.input_bytes = input_bytes
        self.merged = error_path is None
        self.damage: InputDamaged | None = None
        # Set by sync() when an output/error file is not the size this ledger wrote: something else
        # cut or grew it while the batch ran. The rows after the cut are glued onto a torn one and
        # lines are lost, so the batch must not end `completed` (writer.py fails it, file_damaged).
        self.output_damage: str | None = None
        try:
            st = input_path.stat()
        except FileNotFoundError:
            self.damage = gone(input_path)
        else:
            if input_bytes is not None:
                try:
                    check_size(input_path, st.st_size, input_bytes)
                except InputDamaged as exc:
                    self.damage = exc
        out_size, out_whole = _cut(output_path, durable[0])
        err_size, err_whole = (0, True) if error_path is None else _cut(error_path, durable[1])
        if resume is not None and out_whole and err_whole and None not in durable:
            self.done = resume
        else:
            # Counts come from the rows kept; token usage from the checkpoint that recorded those
            # rows. The custom_id set lives only while the restart maps it to line numbers.
            written: set[str] = set()
            ok, bad = _scan(output_path, out_size, written, merged=self.merged)
            if error_path is not None:
                bad += sum(_scan(error_path, err_size, written))
            totals.completed, totals.failed = ok, bad
            self.done = LineSet()
            if self.damage is None:
                try:
                    self.done = _lines_of(input_path, written, max_line_bytes, input_bytes)
                except InputDamaged as exc:
                    self.damage = exc  # the batch ends on it: which lines are written no longer matters
            del written
        self.totals = totals
        self.sizes = [out_size, err_size]
        self._synced = [-1, -1]  # sizes at the last fsync; -1: fsync on the first sync whatever the size
        self._paths = [output_path, output_path if error_path is None else error_path]
        self._handles = handles if handles is not None else HandlePool(2)
        # Rows wait here until the writer flushes after each run of messages (one write() per file
        # then; a write() per row gave the GIL away mid-row, see messages.py), or until _BUFFER.
        self._pending = [bytearray(), bytearray()]
        self.dirty = True
        self.unflushed = False
        self.closed = False

    @property
    def finished(self) -> bool:
        return self.totals.completed + self.totals.failed >= self.total

    def append(self, line: int, row: bytes, *, ok: bool, usage: Usage | None = None) -> bool:
        """Write input line `line`'s row (ending with a newline); False, writing nothing, if that
        line is already written."""
        if not self.done.add(line):
            logger.warning("duplicate result dropped batch=%s line=%d", self.batch_id, line)
            return False
        which = 0 if ok or self.merged else 1
        pending = self._pending[which]
        pending += row
        if len(pending) >= _BUFFER:
            self._write(which)
        self.sizes[which] += len(row)
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

    def _write(self, which: int) -> None:
        pending = self._pending[which]
        if pending:
            self._handles.write(self._paths[which], pending)
            pending.clear()

    def flush(self) -> None:
        if self.unflushed:
            self._write(0)
            self._write(1)
            self.unflushed = False

    def sync(self) -> Progress:
        """fsync the files that grew since the last sync, then describe what is durable. (The error
        file usually has no new rows: skipping its fsync halves the cost of most checkpoints.)"""
        for i in (0,) if self.merged else (0, 1):
            self._write(i)
            actual = self._handles.size(self._paths[i])
            if actual != self.sizes[i] and self.output_damage is None:
                self.output_damage = (f"{'output' if i == 0 else 'error'} file {self._paths[i].name} is {actual} "
                                      f"bytes where the engine wrote {self.sizes[i]}")
                logger.error("output damaged while the batch ran batch=%s: %s", self.batch_id, self.output_damage)
            if self.sizes[i] != self._synced[i]:
                self._handles.fsync(self._paths[i])
                self._synced[i] = self.sizes[i]
        self.unflushed = False
        self.dirty = False
        t = self.totals
        return Progress(completed=t.completed, failed=t.failed, input_tokens=t.input_tokens,
                        cached_tokens=t.cached_tokens, output_tokens=t.output_tokens,
                        reasoning_tokens=t.reasoning_tokens, output_bytes=self.sizes[0],
                        error_bytes=self.sizes[1])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._write(0)
            self._write(1)
        finally:
            for path in self._paths:
                self._handles.release(path)  # releasing the shared path twice (merged) is a no-op
