"""A restart keeps every file and batch: close the app, open a new one on the same data dir."""

from __future__ import annotations

from api_helpers import create_unvalidated, jsonl, line, run_batch, upload_ok, wait_status
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry
from runner.settings import Settings


def _snapshot(c: TestClient) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    files = c.get("/v1/files").json()["data"]
    batches = c.get("/v1/batches", params={"limit": 100}).json()["data"]
    return files, batches


def test_restart_keeps_every_file_and_batch(settings: Settings, registry: ModelRegistry) -> None:
    content = jsonl(line("a"), line("b"))
    with TestClient(create_app(settings, registry)) as c:
        f = upload_ok(c, content)
        running = run_batch(c, content, metadata={"k": "v"})
        failed = run_batch(c, b"nope\n")
        cancelled = run_batch(c, content)
        c.post(f"/v1/batches/{cancelled['id']}/cancel")
        other = upload_ok(c, b"notes", purpose="user_data", filename="n.txt")
        c.delete(f"/v1/files/{other['id']}")
        before = _snapshot(c)
    assert running["status"] == "in_progress" and failed["status"] == "failed"

    with TestClient(create_app(settings, registry)) as c:
        assert _snapshot(c) == before
        assert c.get(f"/v1/files/{f['id']}/content").content == content
        assert c.get(f"/v1/batches/{running['id']}").json()["metadata"] == {"k": "v"}
        assert c.get(f"/v1/batches/{cancelled['id']}").json()["status"] == "cancelling"
        assert c.get(f"/v1/files/{other['id']}").status_code == 404
        # and it goes on working: new objects page after the old ones
        g = upload_ok(c, content)
        assert c.get("/v1/files", params={"limit": 1}).json()["data"][0]["id"] == g["id"]


def test_batch_left_validating_is_validated_after_restart(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings, registry)) as c:
        fid = upload_ok(c, jsonl(line("a")))["id"]
        bid = create_unvalidated(c, fid)["id"]  # the "crash": validation never ran
        assert c.get(f"/v1/batches/{bid}").json()["status"] == "validating"
    with TestClient(create_app(settings, registry)) as c:
        b = wait_status(c, bid)
        assert b["status"] == "in_progress" and b["request_counts"]["total"] == 1


def test_upload_temp_files_left_by_a_crash_are_removed(settings: Settings, registry: ModelRegistry) -> None:
    tmp = settings.files_dir / ".tmp"
    tmp.mkdir(parents=True)
    (tmp / "upload-1-2").write_bytes(b"half an upload")
    with TestClient(create_app(settings, registry)) as c:
        assert c.get("/v1/files").json()["data"] == []
    assert list(tmp.iterdir()) == []
