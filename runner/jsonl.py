"""Input JSONL -> (line number, raw bytes): the one reader of batch input files.

Validation and the engine's feeder both read input through `iter_lines`, so they agree on line
numbers. Tolerates a UTF-8 BOM, CRLF endings, a missing final newline and blank lines (skipped, but
counted, so numbers match what an editor shows).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

BOM = b"\xef\xbb\xbf"


def iter_lines(path: str | Path, max_line_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[int, bytes | None]]:
    """Yield (1-based line number, stripped bytes) for each non-blank line, streaming; None in
    place of the bytes for a line longer than max_line_bytes (the reader goes on after it)."""
    with open(path, "rb", buffering=1024 * 1024) as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                # Skip the rest of the oversized line so the numbering stays right.
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1024 * 1024)
                yield lineno, None
                continue
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            line = raw.strip(b" \t\r\n")
            if line:
                yield lineno, line


def iter_custom_ids(path: str | Path, max_line_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[int, str]]:
    """Yield (line number, custom_id) for each line that has one; unreadable lines are skipped
    (validation rejected them before the engine ever reads the file)."""
    for lineno, raw in iter_lines(path, max_line_bytes):
        if raw is None:
            continue
        try:
            cid = orjson.loads(raw)["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        yield lineno, cid
