"""FileStore: atomic commit, owner scoping, content up to the recorded size, delete, sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import InvalidRequest, NotFound
from runner.store import Database, FileStore


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(Database(tmp_path / "runner.db"), tmp_path / "files")


def _put(files: FileStore, fid: str, data: bytes, *, owner: str = "o", expires_at: int | None = None) -> None:
    tmp, fh = files.new_temp()
    fh.write(data)
    fh.close()
    files.commit_upload(tmp, file_id=fid, owner=owner, purpose="batch", filename="x.jsonl", size=len(data),
                        created_at=10, expires_at=expires_at)
    assert not tmp.exists()


def test_commit_and_read_back(files: FileStore) -> None:
    _put(files, "file-a", b"hello\n")
    row = files.get("o", "file-a")
    assert row["bytes"] == 6 and row["filename"] == "x.jsonl"
    assert b"".join(files.iter_content(row, chunk=2)) == b"hello\n"
    with pytest.raises(NotFound):
        files.get("p", "file-a")


def test_content_stops_at_the_recorded_size(files: FileStore) -> None:
    """A running batch's output may hold bytes past its last checkpoint: readers never see them."""
    _put(files, "file-a", b"line1\n")
    with open(files.path_of("file-a"), "ab") as f:
        f.write(b'{"torn')
    assert b"".join(files.iter_content(files.get("o", "file-a"))) == b"line1\n"


def test_list_after_another_owners_id_is_400(files: FileStore) -> None:
    _put(files, "file-a", b"x", owner="o")
    with pytest.raises(InvalidRequest):
        files.list("p", purpose=None, order="desc", after="file-a", limit=10)


def test_delete_and_sweep(files: FileStore) -> None:
    _put(files, "file-a", b"x", expires_at=100)
    _put(files, "file-b", b"y", expires_at=200)
    _put(files, "file-c", b"z")
    files.delete("o", "file-c", now=50)
    assert not files.path_of("file-c").exists()
    assert files.sweep_expired(99) == []
    assert files.sweep_expired(150) == ["file-a"]
    assert not files.path_of("file-a").exists()
    assert files.get_any("file-a") is None and files.get_any("file-b") is not None
    assert files.sweep_expired(10_000) == ["file-b"]
    assert [r["id"] for r in files.list("o", purpose=None, order="asc", after=None, limit=10)[0]] == []


def test_clean_temp(files: FileStore) -> None:
    _, fh = files.new_temp()
    fh.close()
    assert files.clean_temp() == 1
    assert list(files.tmp_dir.iterdir()) == []
