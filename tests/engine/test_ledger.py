"""Ledger: the written-lines bitmap and the restart protocol (cut to the checkpoint, rebuild)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from runner.engine.ledger import Ledger, LineSet, Totals


def test_lineset_marks_each_line_once_and_grows() -> None:
    s = LineSet()
    assert 5 not in s and len(s) == 0
    assert s.add(5) and not s.add(5)
    assert s.add(1_000_003)  # far past the current size: grows
    assert 5 in s and 1_000_003 in s and 1_000_002 not in s and 4 not in s
    assert len(s) == 2
    assert "5" not in s  # only line numbers are members


def test_lineset_copy_is_independent() -> None:
    s = LineSet()
    s.add(3)
    c = s.copy()
    s.add(4)
    assert 3 in c and 4 not in c and len(c) == 1


def _input(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    # a blank line 2: line numbers count it, as an editor does
    rows = [orjson.dumps({"custom_id": f"c{i}", "body": {}}) for i in range(n)]
    path.write_bytes(rows[0] + b"\n\n" + b"\n".join(rows[1:]) + b"\n")
    return path


def _ledger(tmp_path: Path, inp: Path, durable: tuple[int, int]) -> Ledger:
    return Ledger(batch_id="b", model="m", total=5, input_path=inp, output_path=tmp_path / "out.jsonl",
                  error_path=tmp_path / "err.jsonl", durable=durable, totals=Totals())


def _row(cid: str) -> bytes:
    return orjson.dumps({"id": "x", "custom_id": cid}) + b"\n"


def test_restart_rebuilds_written_lines_from_both_files_and_cuts_the_unrecorded_tail(tmp_path: Path) -> None:
    inp = _input(tmp_path, 5)  # c0 on line 1, c1..c4 on lines 3..6
    led = _ledger(tmp_path, inp, (0, 0))
    assert led.append(1, _row("c0"), ok=True)
    assert led.append(4, _row("c2"), ok=False)
    progress = led.sync()
    assert led.append(6, _row("c4"), ok=True)  # written, never checkpointed
    led.close()

    again = _ledger(tmp_path, inp, (progress.output_bytes, progress.error_bytes))
    assert (again.totals.completed, again.totals.failed) == (1, 1)
    assert 1 in again.done and 4 in again.done and 6 not in again.done and 3 not in again.done
    assert b"c4" not in (tmp_path / "out.jsonl").read_bytes()  # cut back to the checkpoint
    assert not again.append(4, _row("c2"), ok=True)  # already written: dropped
    assert again.append(6, _row("c4"), ok=True)
    again.close()
    assert (tmp_path / "out.jsonl").read_bytes().count(b"c4") == 1


@pytest.mark.parametrize("n", [1, 9, 17])
def test_finished_counts_rows_not_lines(tmp_path: Path, n: int) -> None:
    inp = _input(tmp_path, n)
    led = Ledger(batch_id="b", model="m", total=n, input_path=inp, output_path=tmp_path / "o",
                 error_path=tmp_path / "e", durable=(0, 0), totals=Totals())
    lines = [1, *range(3, n + 2)]
    for i, line in enumerate(lines):
        assert not led.finished
        led.append(line, _row(f"c{i}"), ok=i % 2 == 0)
    assert led.finished and len(led.done) == n
    led.close()


def test_sync_fsyncs_only_the_files_that_grew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.engine.ledger as ledger_mod

    synced: list[str] = []  # the names of the files fsynced (descriptors come and go in the HandlePool)
    real_fsync = ledger_mod.os.fsync
    monkeypatch.setattr(ledger_mod.os, "fsync",
                        lambda fd: (synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name), real_fsync(fd)))
    inp = _input(tmp_path, 5)
    led = _ledger(tmp_path, inp, (0, 0))
    out_fd, err_fd = "out.jsonl", "err.jsonl"
    led.sync()
    assert sorted(synced) == sorted([out_fd, err_fd])  # the first sync covers both (a restart's cut)
    synced.clear()
    led.append(1, _row("c0"), ok=True)
    p = led.sync()
    assert synced == [out_fd] and p.output_bytes > 0 and p.error_bytes == 0
    synced.clear()
    led.sync()
    assert synced == []  # nothing new
    led.append(3, _row("c1"), ok=False)
    led.sync()
    assert synced == [err_fd]
    led.close()


def test_ledgers_share_a_bounded_pool_of_descriptors(tmp_path: Path) -> None:
    """Many ledgers hold no more descriptors than the pool allows (#14), and every row lands in its file."""
    from runner.engine.handles import HandlePool

    pool = HandlePool(4)
    inp = _input(tmp_path, 5)
    before = len(os.listdir("/proc/self/fd"))
    ledgers = [Ledger(batch_id=f"b{i}", model="m", total=5, input_path=inp, output_path=tmp_path / f"o{i}",
                      error_path=tmp_path / f"e{i}", durable=(0, 0), totals=Totals(), handles=pool)
               for i in range(40)]
    for line in (1, 3, 4, 5, 6):
        for i, led in enumerate(ledgers):
            led.append(line, _row(f"c{line}"), ok=(line + i) % 2 == 0)
            led.flush()
            assert len(pool) <= 4
    assert len(os.listdir("/proc/self/fd")) - before <= 4
    for led in ledgers:
        led.sync()
        led.close()
    assert len(pool) == 0
    for i in range(40):
        out = (tmp_path / f"o{i}").read_bytes().splitlines()
        err = (tmp_path / f"e{i}").read_bytes().splitlines()
        assert len(out) + len(err) == 5 and len(out) == (3 if i % 2 else 2)


def test_a_damaged_input_is_recorded_not_raised(tmp_path: Path) -> None:
    inp = _input(tmp_path, 5)
    size = inp.stat().st_size
    ok = Ledger(batch_id="b", model="m", total=5, input_path=inp, output_path=tmp_path / "o", error_path=tmp_path / "e",
                durable=(0, 0), totals=Totals(), input_bytes=size)
    assert ok.damage is None
    ok.close()
    cut = Ledger(batch_id="b", model="m", total=5, input_path=inp, output_path=tmp_path / "o",
                 error_path=tmp_path / "e", durable=(0, 0), totals=Totals(), input_bytes=size + 1)
    assert cut.damage is not None and cut.damage.code == "file_damaged" and "was cut" in cut.damage.detail
    cut.close()
    inp.unlink()
    gone = Ledger(batch_id="b", model="m", total=5, input_path=inp, output_path=tmp_path / "o",
                  error_path=tmp_path / "e", durable=(None, None), totals=Totals(), input_bytes=size)
    assert gone.damage is not None and gone.damage.code == "file_not_found"
    gone.close()
