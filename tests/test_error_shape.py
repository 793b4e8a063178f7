"""Every error path answers {"error": {message, type, param, code}} with the right status and an x-request-id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import CHAT, assert_error, create_batch, jsonl, line, run_batch, upload, upload_ok
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry
from runner.settings import Settings

KEY_A, KEY_B = "sk-test-aaaa", "sk-test-bbbb"


@pytest.fixture
def keyed(settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_keys=(KEY_A, KEY_B)), registry)) as c:
        yield c


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# -- 400 -------------------------------------------------------------------------------------------------
def test_400_bad_query_param(client: TestClient) -> None:
    err = assert_error(client.get("/v1/batches", params={"limit": "0"}), 400, param="limit", code="invalid_value",
                       type_="invalid_request_error")
    assert "limit" in err["message"]


def test_400_bad_create_body(client: TestClient) -> None:
    assert_error(client.post("/v1/batches", json={}), 400, param="input_file_id",
                 type_="invalid_request_error", code="missing_required_parameter")


def test_400_bad_upload(client: TestClient) -> None:
    assert_error(upload(client, b"{}", purpose="nope"), 400, param="purpose", code="invalid_purpose")


# -- 401 -------------------------------------------------------------------------------------------------
def test_401_missing_key(keyed: TestClient) -> None:
    for path in ("/v1/files", "/v1/batches", "/v1/models", "/v1/model-config", "/v1/files/file-x"):
        assert_error(keyed.get(path), 401, code="missing_api_key", param=None, type_="invalid_request_error")


def test_401_unknown_key(keyed: TestClient) -> None:
    assert_error(keyed.get("/v1/files", headers=_auth("sk-wrong")), 401, code="invalid_api_key")
    assert_error(keyed.get("/v1/files", headers={"authorization": "Basic abc"}), 401)


def test_401_on_upload_and_create_before_reading_the_body(keyed: TestClient) -> None:
    assert_error(upload(keyed, jsonl(line())), 401)
    assert_error(keyed.post("/v1/batches", json={}), 401)


def test_known_keys_work_as_bearer_or_x_api_key(keyed: TestClient) -> None:
    assert keyed.get("/v1/files", headers=_auth(KEY_A)).status_code == 200
    assert keyed.get("/v1/files", headers={"x-api-key": KEY_B}).status_code == 200
    assert keyed.get("/v1/files", headers={"authorization": f"bearer  {KEY_A} "}).status_code == 200


def test_health_needs_no_key(keyed: TestClient) -> None:
    r = keyed.get("/health")
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")


# -- 403 -------------------------------------------------------------------------------------------------
def test_403_non_loopback_client_without_keys(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings, registry), client=("10.1.2.3", 5555)) as c:
        assert_error(c.get("/v1/files"), 403, code="permission_denied")
        assert c.get("/health").status_code == 200
    with TestClient(create_app(settings, registry), client=("127.0.0.1", 5555)) as c:
        assert c.get("/v1/files").status_code == 200


# -- 404 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/v1/files/file-nosuch", "id"),
        ("GET", "/v1/files/file-nosuch/content", "id"),
        ("DELETE", "/v1/files/file-nosuch", "id"),
        ("GET", "/v1/batches/batch_nosuch", "batch_id"),
        ("POST", "/v1/batches/batch_nosuch/cancel", "batch_id"),
        ("DELETE", "/v1/batches/batch_nosuch", "batch_id"),
    ],
)
def test_404_unknown_object(client: TestClient, method: str, path: str, param: str) -> None:
    assert_error(client.request(method, path), 404, code="not_found", param=param, type_="invalid_request_error")


def test_404_message_matches_openai(client: TestClient) -> None:
    err = assert_error(client.get("/v1/files/file-abc123"), 404)
    assert err == {"message": "No such File object: file-abc123", "type": "invalid_request_error", "param": "id",
                   "code": "not_found"}


def test_404_unknown_url(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, code="unknown_url")
    assert_error(client.get("/index.php"), 404, code="unknown_url")  # "/" is the dashboard (#15)


def test_405_wrong_method(client: TestClient) -> None:
    assert_error(client.put("/v1/files"), 405, code="method_not_allowed")
    assert_error(client.post("/v1/models"), 405, code="method_not_allowed")


# -- 409 -------------------------------------------------------------------------------------------------
def test_409_cancel_finished_batch(client: TestClient) -> None:
    b = run_batch(client, b"bad\n")
    assert_error(client.post(f"/v1/batches/{b['id']}/cancel"), 409, code="batch_not_cancellable",
                 type_="invalid_request_error")


def test_409_delete_file_in_use(client: TestClient) -> None:
    b = run_batch(client, jsonl(line()))
    assert_error(client.delete(f"/v1/files/{b['input_file_id']}"), 409, code="file_in_use")


# -- 413 -------------------------------------------------------------------------------------------------
def test_413_upload_too_large(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings.replace(max_upload_bytes=64), registry)) as c:
        assert_error(upload(c, b"y" * 65), 413, code="file_too_large", param="file",
                     type_="invalid_request_error")


# -- 429 -------------------------------------------------------------------------------------------------
def test_429_with_retry_after(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings.replace(rate_limit=0.5, rate_burst=3), registry)) as c:
        for _ in range(3):
            assert c.get("/v1/files").status_code == 200
        r = c.get("/v1/files")
        assert_error(r, 429, code="rate_limit_exceeded", type_="rate_limit_error")
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/health").status_code == 200  # health is never limited


def test_429_is_per_key(settings: Settings, registry: ModelRegistry) -> None:
    s = settings.replace(api_keys=(KEY_A, KEY_B), rate_limit=0.1, rate_burst=1)
    with TestClient(create_app(s, registry)) as c:
        assert c.get("/v1/files", headers=_auth(KEY_A)).status_code == 200
        assert_error(c.get("/v1/files", headers=_auth(KEY_A)), 429)
        assert c.get("/v1/files", headers=_auth(KEY_B)).status_code == 200


def test_rate_limit_zero_means_no_limit(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings.replace(rate_limit=0, rate_burst=1), registry)) as c:
        assert all(c.get("/v1/files").status_code == 200 for _ in range(20))


# -- 500 and 503: never for a client's mistake, but shaped when they happen ------------------------------------
def test_500_is_shaped_and_carries_a_request_id(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        svc = c.app.state.services  # type: ignore[attr-defined]

        def boom(*args: object, **kw: object) -> None:
            raise RuntimeError("bug")

        svc.files.list = boom
        err = assert_error(c.get("/v1/files"), 500, code="internal_error", type_="server_error", param=None)
        assert "bug" not in err["message"]  # internals stay in the log


def test_503_disk_full(settings: Settings, registry: ModelRegistry) -> None:
    import errno

    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        svc = c.app.state.services  # type: ignore[attr-defined]

        def full(*args: object, **kw: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        svc.files.commit_upload = full
        r = upload(c, jsonl(line()))
        assert_error(r, 503, code="disk_full", type_="server_error")
        assert r.headers["retry-after"] == "30"


# -- x-request-id ------------------------------------------------------------------------------------------
def test_every_response_has_a_fresh_request_id(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()))
    responses = [
        client.get("/health"),
        client.get("/v1/models"),
        client.get("/v1/model-config"),
        client.get("/v1/files"),
        client.get(f"/v1/files/{f['id']}"),
        client.get(f"/v1/files/{f['id']}/content"),
        create_batch(client, f["id"]),
        client.get("/v1/batches"),
        client.get("/v1/nothing"),
        client.post("/v1/batches", json={"endpoint": CHAT}),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(i and i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)
