"""Shutdown: the app stops its sweeper and waits for every store user before closing the store (#11)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.errors import StoreClosed
from runner.model_specs import ModelRegistry
from runner.settings import Settings
from runner.store import Database, FileStore


def _expired_files(settings: Settings, n: int) -> None:
    """n file rows that expired long ago, so every sweep has a long list of deletions to make."""
    db = Database(settings.db_path)
    files = FileStore(db, settings.files_dir)
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, expires_at)"
            " VALUES (?, 'local', 'batch', 'x.jsonl', 0, 1, 2)",
            [(f"file-old{i:06d}",) for i in range(n)],
        )
    for i in range(n):
        files.path_of(f"file-old{i:06d}").write_bytes(b"")
    db.close()


def _threads_in(function: str) -> list[str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    found = []
    for ident, frame in sys._current_frames().items():
        f = frame
        while f is not None:
            if f.f_code.co_name == function:
                found.append(names.get(ident, str(ident)))
                break
            f = f.f_back
    return found


def test_app_starts_and_stops_many_times_while_sweeping(tmp_path: Path, registry: ModelRegistry) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=0.0)
    _expired_files(settings, 20_000)
    for _ in range(25):
        app = create_app(settings, registry)
        with TestClient(app) as client:
            deadline = time.monotonic() + 10
            while not _threads_in("sweep_expired") and time.monotonic() < deadline:
                time.sleep(0.001)
            assert client.get("/v1/files").status_code == 200
        # The lifespan has ended: no thread may still be sweeping, and the store is closed.
        assert _threads_in("sweep_expired") == []
        with pytest.raises(StoreClosed):
            app.state.services.db.query("SELECT 1")
    db = Database(settings.db_path)
    left = db.query_one("SELECT count(*) AS n FROM files WHERE deleted_at IS NULL")["n"]
    db.close()
    assert 0 < left < 20_000  # the sweeps were interrupted, and made progress


def test_close_waits_for_a_transaction_in_progress(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db")
    inside, release, finished = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction() as conn:
            inside.set()
            release.wait(5)
            conn.execute("UPDATE files SET bytes = 1")
        finished.set()

    t = threading.Thread(target=writer)
    t.start()
    assert inside.wait(5)
    closer = threading.Thread(target=db.close)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive()  # waiting for the writer, not closing under it
    with pytest.raises(StoreClosed):
        db.query("SELECT 1")  # no new use once closing has begun
    release.set()
    closer.join(5)
    t.join(5)
    assert finished.is_set() and not closer.is_alive()
