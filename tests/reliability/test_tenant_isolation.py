"""Tenant isolation matrix (issue #6): with two keys, every endpoint tried across owners answers 404
(or lists nothing of the other's); every endpoint without a key or with a wrong key answers 401."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry, parse_model_specs
from runner.settings import Settings

from .helpers import SIM_MODELS_YAML, assert_error_shape, chat_line, jsonl, upload, wait_batch

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    registry: ModelRegistry = parse_model_specs(yaml.safe_load(SIM_MODELS_YAML))
    data = Path(tmp_path_factory.mktemp("tenants")) / "data"
    settings = Settings(data_dir=str(data), engine=False, sweep_interval=3600.0, api_keys=("key-a", "key-b"))
    with TestClient(create_app(settings, registry)) as c:
        yield c


def _objects(c: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """A file, a running batch (with output and error files), a failed batch, a plain file."""
    f = upload(c, jsonl([chat_line("1"), chat_line("2")]), headers=headers).json()
    running = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"},
                     headers=headers).json()
    running = wait_batch(c, running["id"], headers=headers)
    assert running["status"] == "in_progress"
    spare = upload(c, jsonl([chat_line("1")]), headers=headers).json()
    bad = upload(c, b"nope\n", headers=headers).json()
    failed = c.post("/v1/batches", json={"input_file_id": bad["id"], "endpoint": CHAT, "completion_window": "24h"},
                    headers=headers).json()
    wait_batch(c, failed["id"], headers=headers)
    user = upload(c, b"hello", filename="notes.txt", purpose="user_data", headers=headers).json()
    return {"file": f["id"], "spare": spare["id"], "user": user["id"], "batch": running["id"],
            "output": running["output_file_id"], "error": running["error_file_id"], "failed": failed["id"]}


@pytest.fixture(scope="module")
def objs(two_keys: TestClient) -> dict[str, dict[str, Any]]:
    return {"a": _objects(two_keys, A), "b": _objects(two_keys, B)}


def _cross_requests(o: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every request that names one of the owner's objects."""
    reqs: list[tuple[str, str, dict[str, Any]]] = []
    for key in ("file", "spare", "user", "output", "error"):
        fid = o[key]
        reqs += [("GET", f"/v1/files/{fid}", {}), ("GET", f"/v1/files/{fid}/content", {}),
                 ("DELETE", f"/v1/files/{fid}", {}),
                 ("POST", "/v1/batches", {"json": {"input_file_id": fid, "endpoint": CHAT,
                                                   "completion_window": "24h"}})]
    for key in ("batch", "failed"):
        bid = o[key]
        reqs += [("GET", f"/v1/batches/{bid}", {}), ("POST", f"/v1/batches/{bid}/cancel", {}),
                 ("DELETE", f"/v1/batches/{bid}", {})]
    return reqs


@pytest.mark.parametrize(("me", "other"), [("a", "b"), ("b", "a")])
def test_cross_owner_is_404(two_keys: TestClient, objs: dict[str, dict[str, Any]], me: str, other: str) -> None:
    headers = A if me == "a" else B
    for method, path, kw in _cross_requests(objs[other]):
        resp = two_keys.request(method, path, headers=headers, **kw)
        err = assert_error_shape(resp, 404)
        assert err["code"] == "not_found", (method, path, err)
    # the other's objects are untouched (nothing was deleted or cancelled)
    oh = B if me == "a" else A
    o = objs[other]
    for key in ("file", "spare", "user", "output", "error"):
        assert two_keys.get(f"/v1/files/{o[key]}", headers=oh).status_code == 200
    assert two_keys.get(f"/v1/batches/{o['batch']}", headers=oh).json()["status"] == "in_progress"


@pytest.mark.parametrize(("me", "other"), [("a", "b"), ("b", "a")])
def test_lists_show_only_own(two_keys: TestClient, objs: dict[str, dict[str, Any]], me: str, other: str) -> None:
    headers = A if me == "a" else B
    theirs = set(objs[other].values())
    mine = set(objs[me].values())
    for query in ("", "?order=asc", "?purpose=batch", "?purpose=batch_output", "?purpose=user_data",
                  "?limit=1"):
        page = two_keys.get(f"/v1/files{query}", headers=headers).json()
        assert not {f["id"] for f in page["data"]} & theirs, query
    files = {f["id"] for f in two_keys.get("/v1/files", headers=headers).json()["data"]}
    assert {objs[me][k] for k in ("file", "spare", "user", "output", "error")} <= files
    batches = {b["id"] for b in two_keys.get("/v1/batches?limit=100", headers=headers).json()["data"]}
    assert batches == {objs[me]["batch"], objs[me]["failed"]} and not batches & theirs
    assert mine - theirs == mine
    # the other's ids cannot be used as a cursor (no probing through `after`)
    for path, key in (("/v1/files", "file"), ("/v1/batches", "batch")):
        resp = two_keys.get(path, params={"after": objs[other][key]}, headers=headers)
        assert_error_shape(resp, 400)


NO_KEY_REQUESTS = [
    ("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/files/file-abc"), ("DELETE", "/v1/files/file-abc"),
    ("GET", "/v1/files/file-abc/content"), ("GET", "/v1/batches"), ("POST", "/v1/batches"),
    ("GET", "/v1/batches/batch_abc"), ("POST", "/v1/batches/batch_abc/cancel"), ("DELETE", "/v1/batches/batch_abc"),
    ("GET", "/v1/model-config"), ("GET", "/v1/models"), ("GET", "/v1/unknown"), ("GET", "/openapi.json"),
]
BAD_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic a2V5LWE6"},
    {"Authorization": "Bearer key-ax"},
    {"Authorization": "Bearer KEY-A"},
    {"Authorization": "Bearer key-a,key-b"},
    {"Authorization": "key-a"},
    {"x-api-key": "wrong"},
]


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=[str(i) for i in range(len(BAD_HEADERS))])
def test_no_or_wrong_key_is_401(two_keys: TestClient, objs: dict[str, dict[str, Any]],
                                headers: dict[str, str]) -> None:
    reqs = NO_KEY_REQUESTS + [(m, p) for m, p, _ in _cross_requests(objs["a"])]
    for method, path in reqs:
        resp = two_keys.request(method, path, headers=headers)
        err = assert_error_shape(resp, 401)
        assert err["code"] in ("missing_api_key", "invalid_api_key"), (method, path, err)
    # nothing changed for the owner
    assert two_keys.get(f"/v1/files/{objs['a']['file']}", headers=A).status_code == 200


def test_health_is_open_and_keys_work(two_keys: TestClient) -> None:
    assert two_keys.get("/health").status_code == 200
    assert two_keys.get("/v1/files", headers=A).status_code == 200
    assert two_keys.get("/v1/files", headers={"x-api-key": "key-b"}).status_code == 200
    assert two_keys.get("/v1/models", headers=B).status_code == 200
