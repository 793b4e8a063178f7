"""Owners: each API key sees only its own files and batches, in lists too; another's object is a 404."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import assert_error, create_batch, jsonl, line, upload, wait_status
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry
from runner.settings import Settings

A = {"authorization": "Bearer key-alice"}
B = {"authorization": "Bearer key-bob"}


@pytest.fixture
def c(settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_keys=("key-alice", "key-bob")), registry)) as client:
        yield client


def test_owners_never_see_each_others_objects(c: TestClient) -> None:
    fa = upload(c, jsonl(line()), headers=A).json()
    fb = upload(c, jsonl(line()), headers=B).json()
    ba = wait_status(c, create_batch(c, fa["id"], headers=A).json()["id"], headers=A)
    assert ba["status"] == "in_progress"

    # lists
    assert {f["id"] for f in c.get("/v1/files", headers=A).json()["data"]} == {
        fa["id"], ba["output_file_id"], ba["error_file_id"]}
    assert [f["id"] for f in c.get("/v1/files", headers=B).json()["data"]] == [fb["id"]]
    assert [b["id"] for b in c.get("/v1/batches", headers=A).json()["data"]] == [ba["id"]]
    assert c.get("/v1/batches", headers=B).json()["data"] == []

    # every object endpoint answers 404 to the other owner, exactly as for an unknown id
    for fid in (fa["id"], ba["output_file_id"], ba["error_file_id"]):
        assert_error(c.get(f"/v1/files/{fid}", headers=B), 404, param="id")
        assert_error(c.get(f"/v1/files/{fid}/content", headers=B), 404, param="id")
        assert_error(c.delete(f"/v1/files/{fid}", headers=B), 404, param="id")
    assert_error(c.get(f"/v1/batches/{ba['id']}", headers=B), 404, param="batch_id")
    assert_error(c.post(f"/v1/batches/{ba['id']}/cancel", headers=B), 404, param="batch_id")
    assert_error(c.delete(f"/v1/batches/{ba['id']}", headers=B), 404, param="batch_id")
    # B cannot run a batch on A's file, nor page with A's ids as cursors
    assert_error(create_batch(c, fa["id"], headers=B), 404, param="input_file_id")
    assert_error(c.get("/v1/files", params={"after": fa["id"]}, headers=B), 400, param="after")
    assert_error(c.get("/v1/batches", params={"after": ba["id"]}, headers=B), 400, param="after")

    # and nothing B tried changed A's objects
    assert c.get(f"/v1/batches/{ba['id']}", headers=A).json()["status"] == "in_progress"
    assert c.get(f"/v1/files/{fa['id']}", headers=A).status_code == 200


def test_owner_survives_key_order_change(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings.replace(api_keys=("key-alice", "key-bob")), registry)) as c1:
        fid = upload(c1, jsonl(line()), headers=B).json()["id"]
    with TestClient(create_app(settings.replace(api_keys=("key-bob",)), registry)) as c2:
        assert c2.get(f"/v1/files/{fid}", headers=B).status_code == 200


def test_no_keys_means_one_local_owner(client: TestClient) -> None:
    fid = upload(client, jsonl(line())).json()["id"]
    assert client.get(f"/v1/files/{fid}").status_code == 200
