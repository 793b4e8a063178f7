"""Input JSONL -> (line number, raw bytes): the one reader of batch input files.

Validation and the engine's feeder both read input through this module, so they agree on line
numbers. Tolerates a UTF-8 BOM, CRLF endings, a missing final newline and blank lines (skipped, but
counted, so numbers match what an editor shows).

Two ways to read:
- `iter_lines` holds the file open while it is iterated: validation, which reads one file at once;
- `iter_lines_reopening` holds no descriptor between chunks of about CHUNK_BYTES. The engine keeps
  one reader per running batch, and holding each batch's input open is what ran the engine out of
  file descriptors with a few hundred batches (#14). Given the size validation recorded, it also
  checks at every reopen that the file is still that file: a file gone, cut or grown raises
  InputDamaged, which ends that batch, never the engine.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

BOM = b"\xef\xbb\xbf"
# Read per reopen: one open+fstat+seek+close per ~300 lines of a typical batch, and at most this much
# buffered per running batch (the open BufferedReader it replaces held 1 MiB per batch).
CHUNK_BYTES = 64 * 1024
# Errors of this process, not of the file: they must not fail a batch (the engine's restart retries).
_NOT_THE_FILE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR})


class InputDamaged(Exception):
    """A batch's input file is not the file validation read: gone (`file_not_found`), cut, grown
    or changed (`file_damaged`), or failing to read (`file_unreadable`, e.g. EIO). `detail`
    completes "The input file <name> ..."."""

    def __init__(self, code: str, name: str, detail: str, line: int | None = None) -> None:
        super().__init__(f"input file {name} {detail}")
        self.code = code
        self.name = name
        self.detail = detail
        self.line = line


def _lines(f: IO[bytes], max_line_bytes: int, lineno: int = 0) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, stripped bytes or None, bytes read so far): counted here, since f.tell() per
    line cost more than the rest of the reading."""
    read = 0
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        read += len(raw)
        lineno += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            # Skip the rest of the oversized line so the numbering stays right.
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(1024 * 1024)
                read += len(raw)
            yield lineno, None, read
            continue
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        line = raw.strip(b" \t\r\n")
        if line:
            yield lineno, line, read


def iter_lines(path: str | Path, max_line_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[int, bytes | None]]:
    """Yield (1-based line number, stripped bytes) for each non-blank line, streaming; None in
    place of the bytes for a line longer than max_line_bytes (the reader goes on after it)."""
    with open(path, "rb", buffering=1024 * 1024) as f:
        for lineno, line, _ in _lines(f, max_line_bytes):
            yield lineno, line


def gone(path: Path) -> InputDamaged:
    return InputDamaged("file_not_found", path.name, "is gone from the server's storage")


def _unreadable(path: Path, exc: OSError) -> OSError | InputDamaged:
    if exc.errno in _NOT_THE_FILE:
        return exc
    return InputDamaged("file_unreadable", path.name, f"cannot be read ({exc.strerror or type(exc).__name__})")


def check_size(path: Path, actual: int, size: int) -> None:
    """Raise InputDamaged unless the file still has the size validation recorded."""
    if actual != size:
        how = "was cut" if actual < size else "has grown"
        raise InputDamaged("file_damaged", path.name, f"{how} to {actual} bytes after validation read {size}")


def iter_lines_reopening(path: str | Path, max_line_bytes: int = 16 * 1024 * 1024, *, size: int | None = None,
                         chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """iter_lines, with the file closed between chunks of about `chunk_bytes` (at least one line).
    With `size` (the bytes validation read), raises InputDamaged if the file is gone or has another
    size at any reopen, or ends short of that size; without it, only if the file is gone."""
    path = Path(path)
    offset = lineno = 0
    while True:
        chunk: list[tuple[int, bytes | None]] = []
        try:
            f = open(path, "rb", buffering=max(8192, min(chunk_bytes, 1024 * 1024)))  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise gone(path) from None
        except OSError as exc:
            raise _unreadable(path, exc) from None
        with f:
            if size is not None:
                check_size(path, os.fstat(f.fileno()).st_size, size)
            at_end = True
            read = 0
            try:
                f.seek(offset)
                for n, line, read in _lines(f, max_line_bytes, lineno):
                    chunk.append((n, line))
                    if read >= chunk_bytes:
                        at_end = False
                        break
                offset = offset + read if not at_end else f.tell()
            except OSError as exc:
                raise _unreadable(path, exc) from None
        if chunk:
            lineno = chunk[-1][0]  # the chunk stops right after its last line
        yield from chunk
        if at_end:
            if size is not None and offset != size:  # cut between the fstat and the read
                check_size(path, offset, size)
            return


def iter_custom_ids(path: str | Path, max_line_bytes: int = 16 * 1024 * 1024, *,
                    size: int | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, custom_id) for each line that has one, reading as iter_lines_reopening.
    Without `size` unreadable lines are skipped; with it (a validated file, whose every line had a
    custom_id) an unreadable line means the file changed, and raises InputDamaged."""
    for lineno, raw in iter_lines_reopening(path, max_line_bytes, size=size):
        cid = custom_id_of(raw)
        if cid is None:
            if size is not None:
                raise changed_line(Path(path), lineno)
            continue
        yield lineno, cid


def custom_id_of(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        cid = orjson.loads(raw)["custom_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return cid if isinstance(cid, str) else None


def changed_line(path: Path, lineno: int) -> InputDamaged:
    return InputDamaged("file_damaged", path.name,
                        f"changed after validation: line {lineno} is no longer a request with a custom_id", lineno)
