"""HTTP byte ranges for file downloads (#14): one `Range: bytes=...` -> the span to send, or 416.

One range per request, as download resumers (curl -C, wget -c, browsers) send: `bytes=a-b`,
`bytes=a-`, `bytes=-n`. Several ranges, a malformed spec or another unit are ignored and the whole
file is sent with 200, as RFC 9110 (14.2) allows; a range that starts past the end is a 416 that
names the size (`Content-Range: bytes */size`). `If-Range` with another ETag also sends the whole
file, so a resume never splices two versions of a growing output.
"""

from __future__ import annotations

import re

from runner.errors import ApiError

_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*")
_HUGE = 10**18  # a position with more digits is past any file (and int() of 5,000 digits raises)


class RangeNotSatisfiable(ApiError):
    """416: the range starts at or past the end of the file."""

    status = 416
    type = "invalid_request_error"
    code = "range_not_satisfiable"


def _pos(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _HUGE


def byte_range(header: str | None, size: int, *, if_range: str | None = None,
               etag: str | None = None) -> tuple[int, int] | None:
    """The (first, last) bytes to send, inclusive; None: send the whole file with 200."""
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _SPEC.fullmatch(spec)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):  # the last n bytes
        n = _pos(m.group(2))
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size - 1
    first = _pos(m.group(1))
    last = _pos(m.group(2)) if m.group(2) else _HUGE
    if last < first:
        return None  # invalid: ignored
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"The requested range is not satisfiable: the file has {size} bytes.",
                               param="range", headers={"content-range": f"bytes */{size}"})
