"""BatchStore and the status machine: only the contract's transitions, each stamping its time."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import Conflict, InvalidRequest, NotFound
from runner.ids import new_file_id
from runner.store import BatchStore, Database, FileStore
from runner.store.batches import Progress
from runner.store.transitions import ALLOWED, STAMP, TERMINAL, check_transition

CONTRACT = {
    ("validating", "in_progress"), ("validating", "failed"), ("validating", "cancelling"),
    ("in_progress", "finalizing"), ("in_progress", "expired"), ("in_progress", "cancelling"),
    ("finalizing", "completed"), ("cancelling", "cancelled"),
    ("in_progress", "failed"),  # runner's own (#14): a running batch's input file found damaged
}


@pytest.fixture
def stores(tmp_path: Path) -> tuple[FileStore, BatchStore]:
    db = Database(tmp_path / "runner.db")
    files = FileStore(db, tmp_path / "files")
    return files, BatchStore(db, files)


def _input(files: FileStore, owner: str = "o", purpose: str = "batch") -> str:
    tmp, fh = files.new_temp()
    fh.write(b"{}\n")
    fh.close()
    fid = new_file_id()
    files.commit_upload(tmp, file_id=fid, owner=owner, purpose=purpose, filename="x.jsonl", size=3, created_at=1,
                        expires_at=None)
    return fid


def _batch(stores: tuple[FileStore, BatchStore], batch_id: str = "batch_1", owner: str = "o") -> str:
    files, batches = stores
    fid = _input(files, owner)
    batches.create(batch_id=batch_id, owner=owner, endpoint="/v1/chat/completions", input_file_id=fid,
                   completion_window="24h", metadata=None, output_expires_seconds=None, now=100, expires_at=86_500)
    return batch_id


def test_allowed_is_exactly_the_contract() -> None:
    pairs = {(a, b) for a, nxt in ALLOWED.items() for b in nxt}
    assert pairs == CONTRACT
    assert TERMINAL == {"completed", "failed", "expired", "cancelled"}
    assert set(STAMP) == set(ALLOWED) - {"validating"}


@pytest.mark.parametrize("current", list(ALLOWED))
@pytest.mark.parametrize("new", list(ALLOWED))
def test_check_transition(current: str, new: str) -> None:
    if (current, new) in CONTRACT:
        check_transition(current, new)
    else:
        with pytest.raises(Conflict):
            check_transition(current, new)


def test_start_creates_output_and_error_files(stores: tuple[FileStore, BatchStore]) -> None:
    files, batches = stores
    bid = _batch(stores)
    assert batches.start(bid, model="m", total=5, now=200, file_expiry_seconds=1000)
    row = batches.get("o", bid)
    assert row["status"] == "in_progress" and row["in_progress_at"] == 200 and row["total"] == 5
    for fid in (row["output_file_id"], row["error_file_id"]):
        f = files.get("o", fid)
        assert f["purpose"] == "batch_output" and f["bytes"] == 0 and f["expires_at"] == 1200
        assert f["batch_id"] == bid
        assert files.path_of(fid).exists()
    assert not batches.start(bid, model="m", total=5, now=201, file_expiry_seconds=1000)  # only once


def test_fail_validation_only_from_validating(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    bid = _batch(stores)
    errs = [{"code": "x", "message": "m", "param": None, "line": 1}]
    assert batches.fail_validation(bid, errs, 300, model=None)
    row = batches.get_any(bid)
    assert row["status"] == "failed" and row["failed_at"] == 300
    assert not batches.fail_validation(bid, errs, 301, model=None)


def test_full_run_stamps_every_status(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    bid = _batch(stores)
    batches.start(bid, model="m", total=1, now=200, file_expiry_seconds=10)
    batches.transition(bid, "finalizing", 300)
    batches.transition(bid, "completed", 400)
    row = batches.get_any(bid)
    assert (row["status"], row["finalizing_at"], row["completed_at"]) == ("completed", 300, 400)
    with pytest.raises(Conflict):
        batches.transition(bid, "cancelling", 500)


def test_illegal_transition_is_conflict(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    bid = _batch(stores)
    with pytest.raises(Conflict):
        batches.transition(bid, "completed", 200)
    assert batches.get_any(bid)["status"] == "validating"
    with pytest.raises(NotFound):
        batches.transition("batch_nosuch", "failed", 1)


def test_cancel_rules(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    bid = _batch(stores)
    batches.start(bid, model="m", total=1, now=200, file_expiry_seconds=10)
    assert batches.request_cancel("o", bid, 300)["status"] == "cancelling"
    assert batches.request_cancel("o", bid, 301)["cancelling_at"] == 300  # idempotent
    batches.transition(bid, "cancelled", 400)
    assert batches.request_cancel("o", bid, 401)["status"] == "cancelled"
    with pytest.raises(NotFound):
        batches.request_cancel("someone-else", bid, 402)


def test_create_checks_owner_and_purpose(stores: tuple[FileStore, BatchStore]) -> None:
    files, batches = stores
    fid = _input(files, "o")
    other = _input(files, "o", purpose="user_data")
    kw = dict(endpoint="/v1/chat/completions", completion_window="24h", metadata=None, output_expires_seconds=None,
              now=1, expires_at=2)
    with pytest.raises(NotFound):
        batches.create(batch_id="batch_x", owner="p", input_file_id=fid, **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        batches.create(batch_id="batch_y", owner="o", input_file_id=other, **kw)  # type: ignore[arg-type]


def test_checkpoint_and_durable_sizes(stores: tuple[FileStore, BatchStore]) -> None:
    files, batches = stores
    bid = _batch(stores)
    batches.start(bid, model="m", total=3, now=200, file_expiry_seconds=10)
    assert batches.durable_sizes(bid) == (0, 0)
    batches.checkpoint(bid, Progress(completed=2, failed=1, input_tokens=10, cached_tokens=1, output_tokens=5,
                                     reasoning_tokens=0, output_bytes=123, error_bytes=45))
    assert batches.durable_sizes(bid) == (123, 45)
    row = batches.get_any(bid)
    assert (row["completed"], row["failed"], row["input_tokens"], row["output_tokens"]) == (2, 1, 10, 5)
    assert files.get("o", row["output_file_id"])["bytes"] == 123


def test_list_is_per_owner_newest_first(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    for i in range(3):
        _batch(stores, f"batch_{i}")
    _batch(stores, "batch_p", owner="p")
    rows, more = batches.list("o", after=None, limit=2)
    assert [r["id"] for r in rows] == ["batch_2", "batch_1"] and more
    rows, more = batches.list("o", after="batch_1", limit=2)
    assert [r["id"] for r in rows] == ["batch_0"] and not more
    assert [r["id"] for r in batches.list("p", after=None, limit=10)[0]] == ["batch_p"]


def test_active_lists_what_the_engine_works_on(stores: tuple[FileStore, BatchStore]) -> None:
    _, batches = stores
    a, b, c = (_batch(stores, f"batch_{x}") for x in "abc")
    batches.start(a, model="m", total=1, now=1, file_expiry_seconds=10)
    batches.start(b, model="m", total=1, now=1, file_expiry_seconds=10)
    batches.request_cancel("o", b, 2)
    assert [r["id"] for r in batches.active()] == [a, b]
    assert [r["id"] for r in batches.validating()] == [c]
