"""/v1/batches: create, validation outcome, list (newest first, cursor), retrieve, cancel, DELETE alias."""

from __future__ import annotations

import time

import pytest
from api_helpers import (
    CHAT,
    EMBED,
    assert_error,
    create_batch,
    create_unvalidated,
    jsonl,
    line,
    run_batch,
    upload_ok,
    wait_status,
)
from starlette.testclient import TestClient

BATCH_FIELDS = {
    "id", "object", "endpoint", "model", "errors", "input_file_id", "completion_window", "status",
    "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
    "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts", "metadata",
    "usage", "throughput",
}
USAGE = {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}


def _file(client: TestClient, *rows: object) -> str:
    return upload_ok(client, jsonl(*(rows or (line(),))))["id"]


def test_create_returns_a_validating_batch_with_every_field(client: TestClient) -> None:
    fid = _file(client, line("a"), line("b"))
    before = int(time.time())
    r = create_batch(client, fid, metadata={"project": "x"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert set(b) == BATCH_FIELDS
    assert b["id"].startswith("batch_")
    assert b["object"] == "batch"
    assert b["endpoint"] == CHAT
    assert b["input_file_id"] == fid
    assert b["completion_window"] == "24h"
    assert b["status"] == "validating"
    assert before <= b["created_at"] <= int(time.time())
    assert b["expires_at"] == b["created_at"] + 86_400
    assert b["metadata"] == {"project": "x"}
    assert b["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert b["usage"] == USAGE
    for key in ("errors", "output_file_id", "error_file_id", "in_progress_at", "finalizing_at", "completed_at",
                "failed_at", "expired_at", "cancelling_at", "cancelled_at"):
        assert b[key] is None, key


def test_valid_batch_moves_to_in_progress_and_stays(client: TestClient) -> None:
    fid = _file(client, line("a"), line("b"), line("c"))
    b = wait_status(client, create_batch(client, fid).json()["id"])
    assert b["status"] == "in_progress"
    assert b["model"] == "sim-chat"
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert b["in_progress_at"] >= b["created_at"]
    assert b["output_file_id"].startswith("file-") and b["error_file_id"].startswith("file-")
    assert b["errors"] is None
    time.sleep(0.2)  # no engine in process: nothing moves it on
    assert client.get(f"/v1/batches/{b['id']}").json()["status"] == "in_progress"


@pytest.mark.parametrize(("endpoint", "model"), [(CHAT, "sim-chat"), ("/v1/completions", "sim-chat"),
                                                 (EMBED, "sim-embed")])
def test_every_supported_endpoint_validates(client: TestClient, endpoint: str, model: str) -> None:
    b = run_batch(client, jsonl(line("a", url=endpoint, model=model)), endpoint=endpoint)
    assert b["status"] == "in_progress", b["errors"]
    assert b["endpoint"] == endpoint and b["model"] == model


@pytest.mark.parametrize(("endpoint", "model"), [(CHAT, "sim-chat"), (EMBED, "sim-embed")])
def test_mithril_create_with_input_file_id_only(client: TestClient, endpoint: str, model: str) -> None:
    """Mithril's POST /v1/batches takes only input_file_id: the endpoint comes from the lines."""
    fid = _file(client, line("a", url=endpoint, model=model))
    r = client.post("/v1/batches", json={"input_file_id": fid})
    assert r.status_code == 200, r.text
    b = wait_status(client, r.json()["id"])
    assert (b["endpoint"], b["completion_window"], b["status"]) == (endpoint, "24h", "in_progress")


def test_mithril_create_on_a_file_with_no_usable_url_is_400(client: TestClient) -> None:
    fid = upload_ok(client, b'{"custom_id": "a", "url": "/v1/moderations"}\n')["id"]
    assert_error(client.post("/v1/batches", json={"input_file_id": fid}), 400, param="endpoint")


def test_invalid_batch_fails_with_line_numbered_errors(client: TestClient) -> None:
    b = run_batch(client, jsonl(line("a"), b"{oops", line("a")))
    assert b["status"] == "failed"
    assert b["failed_at"] >= b["created_at"]
    assert b["in_progress_at"] is None and b["output_file_id"] is None
    assert b["errors"]["object"] == "list"
    assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [("invalid_json", 2),
                                                                     ("duplicate_custom_id", 3)]
    assert all(set(e) == {"code", "message", "param", "line"} for e in b["errors"]["data"])


def test_retrieve_and_unknown_ids(client: TestClient) -> None:
    created = create_batch(client, _file(client)).json()
    got = client.get(f"/v1/batches/{created['id']}").json()
    assert got["id"] == created["id"] and set(got) == BATCH_FIELDS
    for bad in ("batch_nosuch", "nope", "file-abc"):
        err = assert_error(client.get(f"/v1/batches/{bad}"), 404, code="not_found", param="batch_id")
        assert bad in err["message"]


# -- create: bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"endpoint": CHAT, "completion_window": "24h"}, "input_file_id", "missing_required_parameter"),
        ({"input_file_id": 5, "endpoint": CHAT, "completion_window": "24h"}, "input_file_id",
         "missing_required_parameter"),
        ({"input_file_id": "F", "endpoint": None, "completion_window": "24h"}, "endpoint",
         "missing_required_parameter"),
        ({"input_file_id": "F", "endpoint": "/v1/moderations", "completion_window": "24h"}, "endpoint",
         "invalid_endpoint"),
        ({"input_file_id": "F", "endpoint": "/v2/chat", "completion_window": "24h"}, "endpoint", "invalid_endpoint"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": None}, "completion_window",
         "invalid_completion_window"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "48h"}, "completion_window",
         "invalid_completion_window"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h", "model": "x"}, "model",
         "unknown_parameter"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h", "metadata": "x"}, "metadata",
         "invalid_metadata"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
          "output_expires_after": {"anchor": "created_at", "seconds": 3599}}, "output_expires_after.seconds",
         "invalid_value"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
          "output_expires_after": {"anchor": "created_at", "seconds": 2_592_001}}, "output_expires_after.seconds",
         "invalid_value"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
          "output_expires_after": {"anchor": "completed_at", "seconds": 3600}}, "output_expires_after.anchor",
         "invalid_value"),
        ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
          "output_expires_after": 3600}, "output_expires_after", "invalid_value"),
    ],
)
def test_create_bad_body_is_400(client: TestClient, body: dict[str, object], param: str, code: str) -> None:
    fid = _file(client)
    body = {k: (fid if v == "F" else v) for k, v in body.items()}
    assert_error(client.post("/v1/batches", json=body), 400, param=param, code=code)
    assert client.get("/v1/batches").json()["data"] == []


@pytest.mark.parametrize("raw", [b"", b"   ", b"not json", b"[1, 2]", b'"str"', b"null"])
def test_create_body_not_a_json_object_is_400(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/batches", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400)


def test_create_body_too_large_is_413(client: TestClient) -> None:
    r = client.post("/v1/batches", content=b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}',
                    headers={"content-type": "application/json"})
    assert_error(r, 413)


def test_create_on_unknown_file_is_404(client: TestClient) -> None:
    for fid in ("file-nosuch", "junk"):
        err = assert_error(create_batch(client, fid), 404, param="input_file_id")
        assert fid in err["message"]


def test_create_on_deleted_file_is_404(client: TestClient) -> None:
    fid = _file(client)
    client.delete(f"/v1/files/{fid}")
    assert_error(create_batch(client, fid), 404, param="input_file_id")


def test_create_on_a_non_batch_file_is_400(client: TestClient) -> None:
    fid = upload_ok(client, jsonl(line()), purpose="user_data")["id"]
    assert_error(create_batch(client, fid), 400, param="input_file_id", code="invalid_file_purpose")


def test_create_on_an_output_file_is_400(client: TestClient) -> None:
    b = run_batch(client, jsonl(line()))
    assert_error(create_batch(client, b["output_file_id"]), 400, code="invalid_file_purpose")


# -- metadata ------------------------------------------------------------------------------------------
def test_metadata_at_the_limits_is_accepted(client: TestClient) -> None:
    meta = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert all(len(k) == 64 for k in meta)
    r = create_batch(client, _file(client), metadata=meta)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == meta
    assert client.get(f"/v1/batches/{r.json()['id']}").json()["metadata"] == meta


def test_empty_metadata_is_kept(client: TestClient) -> None:
    r = create_batch(client, _file(client), metadata={})
    assert r.status_code == 200 and r.json()["metadata"] == {}


@pytest.mark.parametrize(
    "meta",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "x"}},
        ["k", "v"],
    ],
)
def test_metadata_over_the_limits_is_400(client: TestClient, meta: object) -> None:
    assert_error(create_batch(client, _file(client), metadata=meta), 400, param="metadata", code="invalid_metadata")


def test_metadata_null_is_none(client: TestClient) -> None:
    r = create_batch(client, _file(client), metadata=None)
    assert r.status_code == 200 and r.json()["metadata"] is None


# -- list --------------------------------------------------------------------------------------------
def _batches(client: TestClient, n: int) -> list[str]:
    fid = _file(client)
    ids = []
    for _ in range(n):
        r = create_batch(client, fid)
        assert r.status_code == 200
        ids.append(r.json()["id"])
    return ids


def test_list_newest_first_default_limit_20(client: TestClient) -> None:
    ids = _batches(client, 23)
    page = client.get("/v1/batches").json()
    assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
    assert page["object"] == "list"
    assert [b["id"] for b in page["data"]] == ids[::-1][:20]
    assert page["first_id"] == ids[-1] and page["last_id"] == ids[3]
    assert page["has_more"] is True
    rest = client.get("/v1/batches", params={"after": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == ids[::-1][20:]
    assert rest["has_more"] is False
    assert rest["first_id"] == ids[2] and rest["last_id"] == ids[0]


def test_list_walks_every_page_with_a_small_limit(client: TestClient) -> None:
    ids = _batches(client, 7)
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 3} | ({"after": after} if after else {})
        page = client.get("/v1/batches", params=params).json()
        seen += [b["id"] for b in page["data"]]
        assert len(page["data"]) <= 3
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]


def test_list_empty(client: TestClient) -> None:
    assert client.get("/v1/batches").json() == {"object": "list", "data": [], "first_id": None, "last_id": None,
                                               "has_more": False}


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "many"}, {"after": "batch_nosuch"}],
)
def test_list_bad_params_are_400(client: TestClient, params: dict[str, str]) -> None:
    assert_error(client.get("/v1/batches", params=params), 400, param=next(iter(params)))


def test_list_limit_100_is_accepted(client: TestClient) -> None:
    _batches(client, 2)
    assert len(client.get("/v1/batches", params={"limit": 100}).json()["data"]) == 2


# -- cancel and the DELETE alias -------------------------------------------------------------------------
def test_cancel_an_in_progress_batch(client: TestClient) -> None:
    b = run_batch(client, jsonl(line()))
    r = client.post(f"/v1/batches/{b['id']}/cancel")
    assert r.status_code == 200
    c = r.json()
    assert set(c) == BATCH_FIELDS
    assert c["status"] == "cancelling" and c["cancelling_at"] >= b["created_at"]
    # cancelling twice is harmless
    again = client.post(f"/v1/batches/{b['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelling"


def test_cancel_while_validating_finishes_at_once(client: TestClient) -> None:
    svc = client.app.state.services  # type: ignore[attr-defined]
    b = create_unvalidated(client, _file(client))  # the cancel lands while it is still `validating`
    c = client.post(f"/v1/batches/{b['id']}/cancel").json()
    assert c["status"] == "cancelled"
    assert c["cancelling_at"] is not None and c["cancelled_at"] is not None
    svc.submit_validation(b["id"])  # a late validator leaves it alone
    time.sleep(0.1)
    assert client.get(f"/v1/batches/{b['id']}").json()["status"] == "cancelled"


def test_cancel_a_failed_batch_is_409(client: TestClient) -> None:
    b = run_batch(client, b"nope\n")
    assert b["status"] == "failed"
    assert_error(client.post(f"/v1/batches/{b['id']}/cancel"), 409, code="batch_not_cancellable")
    assert_error(client.delete(f"/v1/batches/{b['id']}"), 409, code="batch_not_cancellable")


@pytest.mark.parametrize("path", [["finalizing"], ["finalizing", "completed"], ["expired"]])
def test_cancel_a_finished_batch_is_409(client: TestClient, path: list[str]) -> None:
    b = run_batch(client, jsonl(line()))
    svc = client.app.state.services  # type: ignore[attr-defined]
    for status in path:
        svc.batches.transition(b["id"], status, int(time.time()))
    assert_error(client.post(f"/v1/batches/{b['id']}/cancel"), 409, code="batch_not_cancellable",
                 param="batch_id")
    assert client.get(f"/v1/batches/{b['id']}").json()["status"] == path[-1]


def test_cancel_unknown_is_404(client: TestClient) -> None:
    assert_error(client.post("/v1/batches/batch_nosuch/cancel"), 404, param="batch_id")
    assert_error(client.delete("/v1/batches/batch_nosuch"), 404, param="batch_id")


def test_delete_batch_is_mithrils_cancel_alias(client: TestClient) -> None:
    b = run_batch(client, jsonl(line()))
    r = client.delete(f"/v1/batches/{b['id']}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"message"} and isinstance(body["message"], str)
    assert b["id"] in body["message"]
    assert client.get(f"/v1/batches/{b['id']}").json()["status"] == "cancelling"


def test_many_lines_validate_off_the_event_loop(client: TestClient) -> None:
    rows = [line(f"r{i}") for i in range(2000)]
    b = run_batch(client, jsonl(*rows))
    assert b["status"] == "in_progress" and b["request_counts"]["total"] == 2000
    # the API kept answering while validating
    assert client.get("/health").status_code == 200
