"""Disk full (issue #6): the data dir on a 2 MiB tmpfs. Uploads until the disk fills must end in a
clear error (503 disk_full in OpenAI's shape, or 413), leave no torn or half file visible (every file
row matches its bytes on disk, no orphan bytes, no temp files), the server keeps answering GETs, a
batch created on a full disk does not stick, and after deleting files uploads work again.

Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import parse_model_specs
from runner.settings import Settings

from .helpers import SIM_MODELS_YAML, assert_error_shape, chat_line, jsonl, upload, wait_batch

CHAT = "/v1/chat/completions"


def _line_file(size: int, tag: str) -> bytes:
    """A valid batch input of about `size` bytes."""
    pad = "x" * 1000
    rows = [chat_line(f"{tag}-{i}", metadata_pad=pad) for i in range(max(1, size // 1100))]
    return jsonl(rows)


def _check_consistent(c: TestClient, data: Path) -> list[dict[str, Any]]:
    """Every visible file's recorded size equals its bytes on disk; no orphans; no temp files."""
    files = c.get("/v1/files").json()["data"]
    on_disk = {p.name for p in (data / "files").iterdir() if p.is_file()}
    for f in files:
        path = data / "files" / f["id"]
        assert path.exists(), f
        assert path.stat().st_size == f["bytes"], f
        assert len(c.get(f"/v1/files/{f['id']}/content").content) == f["bytes"]
    assert on_disk <= {f["id"] for f in files}, f"orphan bytes on disk: {on_disk - {f['id'] for f in files}}"
    tmp = data / "files" / ".tmp"
    assert not list(tmp.iterdir()), list(tmp.iterdir())
    return files


def test_disk_full_upload_and_recover(small_disk: Path) -> None:
    data = small_disk / "data"
    settings = Settings(data_dir=str(data), engine=False, sweep_interval=3600.0, rate_limit=0.0)
    registry = parse_model_specs(yaml.safe_load(SIM_MODELS_YAML))
    outcome: dict[str, Any] = {}
    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        ok: list[str] = []
        full = None
        for i in range(40):
            resp = upload(c, _line_file(200_000, f"f{i}"))
            if resp.status_code != 200:
                full = resp
                break
            ok.append(resp.json()["id"])
        assert full is not None, "the 2 MiB disk never filled"
        err = assert_error_shape(full)
        assert full.status_code in (503, 507, 413), (full.status_code, err)
        if full.status_code == 503:
            assert err["code"] == "disk_full" and full.headers.get("retry-after")
        outcome["uploads_before_full"] = len(ok)
        outcome["full_status"] = (full.status_code, err["code"])

        # nothing half-written is visible, and reads go on
        files = _check_consistent(c, data)
        assert {f["id"] for f in files} == set(ok)
        assert c.get("/health").status_code == 200
        assert c.get("/v1/batches").status_code == 200
        assert c.get(f"/v1/files/{ok[0]}").status_code == 200

        # another process takes the last byte: even SQLite's writes now fail with ENOSPC
        filler = small_disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        statvfs = os.statvfs(small_disk)
        outcome["free_when_full"] = statvfs.f_bavail * statvfs.f_frsize

        # writes on a full disk: a clear answer, never a 500; reads go on
        for _ in range(3):
            resp = upload(c, _line_file(20_000, "more"))
            assert resp.status_code in (503, 507, 413), resp.text
            assert_error_shape(resp)
        created = c.post("/v1/batches", json={"input_file_id": ok[0], "endpoint": CHAT, "completion_window": "24h"})
        assert created.status_code in (200, 503), created.text
        stuck = created.json()["id"] if created.status_code == 200 else None
        if created.status_code != 200:
            assert_error_shape(created, 503)
        outcome["create_batch_on_full_disk"] = created.status_code
        deleted = c.delete(f"/v1/files/{ok[-1]}")
        assert deleted.status_code in (200, 503), deleted.text
        outcome["delete_on_full_disk"] = deleted.status_code
        time.sleep(1.0)  # validation tries meanwhile (and, with no space, backs off and retries)
        if stuck is not None:
            outcome["batch_while_full"] = c.get(f"/v1/batches/{stuck}").json()["status"]
        assert c.get("/health").status_code == 200
        assert c.get("/v1/files").status_code == 200
        assert c.get(f"/v1/files/{ok[0]}/content").status_code == 200
        _check_consistent(c, data)

        # space returns: the other process goes away and we delete files
        filler.unlink()
        for fid in ok[1:]:
            resp = c.delete(f"/v1/files/{fid}")
            assert resp.status_code in (200, 404, 409), resp.text
        statvfs = os.statvfs(small_disk)
        outcome["free_after_delete"] = statvfs.f_bavail * statvfs.f_frsize

        # ... and work resumes: a batch created on the full disk settles, uploads and batches work again
        if stuck is not None:
            batch = wait_batch(c, stuck, timeout=30)
            assert batch["status"] in ("in_progress", "failed"), batch
            outcome["batch_after_space_returns"] = batch["status"]
        again = upload(c, jsonl([chat_line("again-1"), chat_line("again-2")]))
        assert again.status_code == 200, again.text
        b = c.post("/v1/batches", json={"input_file_id": again.json()["id"], "endpoint": CHAT,
                                        "completion_window": "24h"})
        assert b.status_code == 200
        assert wait_batch(c, b.json()["id"])["status"] == "in_progress"
        big = upload(c, _line_file(200_000, "big"))
        assert big.status_code == 200, big.text
        _check_consistent(c, data)
    print(f"\ndisk full: {outcome}")


def test_disk_full_restart_keeps_state(small_disk: Path) -> None:
    """After filling the disk and a restart of the app, every file and batch is still there."""
    data = small_disk / "data"
    settings = Settings(data_dir=str(data), engine=False, sweep_interval=3600.0, rate_limit=0.0)
    registry = parse_model_specs(yaml.safe_load(SIM_MODELS_YAML))
    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        ids = []
        for i in range(40):
            resp = upload(c, _line_file(250_000, f"r{i}"))
            if resp.status_code != 200:
                break
            ids.append(resp.json()["id"])
        before = sorted(f["id"] for f in c.get("/v1/files").json()["data"])
    with contextlib.suppress(FileNotFoundError):
        for p in (data / "files" / ".tmp").iterdir():
            p.unlink()
    t0 = time.monotonic()
    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        assert time.monotonic() - t0 < 10
        after = sorted(f["id"] for f in c.get("/v1/files").json()["data"])
        assert after == before == sorted(ids)
        _check_consistent(c, data)


def test_validation_retries_after_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose validation hits a storage error (disk full, database busy) is validated again
    after a backoff instead of sitting in `validating` until the next restart."""
    import sqlite3

    from runner.store.batches import BatchStore

    real_start = BatchStore.start
    calls = {"n": 0}

    def flaky_start(self: BatchStore, *args: Any, **kw: Any) -> bool:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real_start(self, *args, **kw)

    monkeypatch.setattr(BatchStore, "start", flaky_start)
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0, rate_limit=0.0)
    registry = parse_model_specs(yaml.safe_load(SIM_MODELS_YAML))
    with TestClient(create_app(settings, registry)) as c:
        fid = upload(c, jsonl([chat_line("1")])).json()["id"]
        bid = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": CHAT, "completion_window": "24h"}).json()
        batch = wait_batch(c, bid["id"], timeout=15)
        assert batch["status"] == "in_progress" and calls["n"] == 3
        files = {f["id"] for f in c.get("/v1/files").json()["data"]}
        assert {p.name for p in (tmp_path / "data" / "files").iterdir() if p.is_file()} == files
