"""byte_range: one `Range: bytes=...` header -> the span to send, None (whole file) or 416."""

from __future__ import annotations

import pytest

from runner.api.ranges import RangeNotSatisfiable, byte_range


@pytest.mark.parametrize(("header", "size", "span"), [
    (None, 10, None),
    ("bytes=2-5", 10, (2, 5)),
    ("bytes=2-", 10, (2, 9)),
    ("bytes=-3", 10, (7, 9)),
    ("bytes=-30", 10, (0, 9)),
    ("bytes=0-" + "9" * 5000, 10, (0, 9)),  # int() of 5,000 digits raises: clamped instead
    ("bytes=" + "0" * 30 + "4-5", 10, (4, 5)),  # leading zeros are still the number
    ("bytes=\u0663-\u0664", 10, None),  # Arabic-Indic digits are not a range
    ("bytes=1-2, 4-5", 10, None),
    ("bytes=5-2", 10, None),
    ("pages=1-2", 10, None),
    ("bytes 1-2", 10, None),
    ("bytes=-", 10, None),
])
def test_byte_range(header: str | None, size: int, span: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == span


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=-5", 0), ("bytes=0-", 0),
                                              ("bytes=" + "9" * 40 + "-", 10)])
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        byte_range(header, size)
    assert info.value.status == 416 and info.value.headers == {"content-range": f"bytes */{size}"}
    assert info.value.code == "range_not_satisfiable"


def test_if_range_with_another_etag_sends_the_whole_file() -> None:
    assert byte_range("bytes=1-2", 10, if_range='"a"', etag='"a"') == (1, 2)
    assert byte_range("bytes=1-2", 10, if_range='"b"', etag='"a"') is None
    assert byte_range("bytes=1-2", 10, if_range="Wed, 21 Oct 2015 07:28:00 GMT", etag='"a"') is None
