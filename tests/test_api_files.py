"""/v1/files: upload, list (limit/order/after/purpose), retrieve, content, delete, retention."""

from __future__ import annotations

import time

import pytest
from api_helpers import assert_error, create_batch, jsonl, line, upload, upload_ok, wait_status
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry
from runner.settings import Settings

FILE_FIELDS = {"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status",
               "status_details"}


def test_upload_returns_the_openai_file_object(client: TestClient) -> None:
    content = jsonl(line("a"), line("b"))
    before = int(time.time())
    f = upload_ok(client, content, filename="my input.jsonl")
    assert set(f) == FILE_FIELDS
    assert f["id"].startswith("file-")
    assert f["object"] == "file"
    assert f["bytes"] == len(content)
    assert isinstance(f["created_at"], int) and before <= f["created_at"] <= int(time.time())
    assert f["filename"] == "my input.jsonl"
    assert f["purpose"] == "batch"
    assert f["status"] == "processed"
    # purpose=batch files expire after 30 days by default, as OpenAI's do
    assert f["expires_at"] == f["created_at"] + 30 * 86_400


def test_upload_keeps_only_the_base_name_of_a_path_like_filename(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()), filename="../../etc/x.jsonl")
    assert f["filename"] == "x.jsonl"


@pytest.mark.parametrize("purpose", ["assistants", "fine-tune", "vision", "user_data", "evals"])
def test_upload_other_purposes_accept_any_extension_and_do_not_expire(client: TestClient, purpose: str) -> None:
    f = upload_ok(client, b"\x00\x01 binary", purpose=purpose, filename="data.bin")
    assert f["purpose"] == purpose
    assert f["expires_at"] is None


def test_upload_expires_after_sets_expires_at(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()), data={"expires_after[anchor]": "created_at",
                                               "expires_after[seconds]": "3600"})
    assert f["expires_at"] == f["created_at"] + 3600
    g = upload_ok(client, jsonl(line()), data={"expires_after": '{"anchor": "created_at", "seconds": 7200}'})
    assert g["expires_at"] == g["created_at"] + 7200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}, "expires_after.seconds"),
        ({"expires_after[seconds]": "2592001"}, "expires_after.seconds"),
        ({"expires_after[seconds]": "soon"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after[when]": "x"}, "expires_after.when"),  # unknown_parameter names the field
        ({"expires_after": "not json"}, "expires_after"),
        ({"expires_after": "[1]"}, "expires_after"),
    ],
)
def test_upload_bad_expires_after_is_400(client: TestClient, fields: dict[str, str], param: str) -> None:
    assert_error(upload(client, jsonl(line()), data=fields), 400, param=param)


def test_upload_needs_multipart(client: TestClient) -> None:
    r = client.post("/v1/files", json={"purpose": "batch"})
    assert_error(r, 400, code="invalid_content_type", param="file")


def test_upload_multipart_without_boundary_is_400(client: TestClient) -> None:
    r = client.post("/v1/files", content=b"x", headers={"content-type": "multipart/form-data"})
    assert_error(r, 400, code="invalid_multipart")


def test_upload_malformed_multipart_is_400_not_500(client: TestClient) -> None:
    r = client.post("/v1/files", content=b"--b\r\ngarbage without headers end",
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400
    assert_error(r, 400)


def test_upload_without_file_part_is_400(client: TestClient) -> None:
    r = client.post("/v1/files", data={"purpose": "batch"}, files={"other": ("", b"")})
    assert_error(r, 400, param="file")


def test_upload_with_file_under_another_name_is_400(client: TestClient) -> None:
    r = client.post("/v1/files", data={"purpose": "batch"}, files={"upload": ("a.jsonl", b"{}")})
    assert_error(r, 400, code="invalid_multipart", param="file")


def test_upload_without_purpose_is_400(client: TestClient) -> None:
    r = client.post("/v1/files", files={"file": ("a.jsonl", jsonl(line()))})
    assert_error(r, 400, code="missing_purpose", param="purpose")


def test_upload_unknown_purpose_is_400(client: TestClient) -> None:
    assert_error(upload(client, jsonl(line()), purpose="batch_output"), 400, code="invalid_purpose",
                 param="purpose")


def test_upload_batch_file_takes_any_name(client: TestClient) -> None:
    for name, shown in (("input.json", "input.json"), ("upload", "upload"), ("data", "data"),
                        ("../dir/x.txt", "x.txt")):
        r = upload(client, jsonl(line()), filename=name)
        assert r.status_code == 200, r.text
        assert r.json()["filename"] == shown and r.json()["purpose"] == "batch"


def test_upload_over_the_cap_is_413_and_leaves_nothing(settings: Settings, registry: ModelRegistry) -> None:
    small = settings.replace(max_upload_bytes=100)
    with TestClient(create_app(small, registry)) as c:
        r = upload(c, b"x" * 101)
        assert_error(r, 413, code="file_too_large", param="file")
        assert c.get("/v1/files").json()["data"] == []
        assert upload(c, b"x" * 100).status_code == 200
    files_dir = small.files_dir
    assert len([p for p in files_dir.iterdir() if p.is_file()]) == 1
    assert list((files_dir / ".tmp").iterdir()) == []


def test_upload_declared_length_far_over_the_cap_is_413_before_reading(
    settings: Settings, registry: ModelRegistry
) -> None:
    with TestClient(create_app(settings.replace(max_upload_bytes=10), registry)) as c:
        r = c.post("/v1/files", content=b"--b--\r\n",
                   headers={"content-type": "multipart/form-data; boundary=b", "content-length": "99999999"})
        assert r.status_code == 413


def test_retrieve_and_content_round_trip(client: TestClient) -> None:
    content = "\ufeff".encode() + jsonl(line("é"), line("b")).replace(b"\n", b"\r\n")
    f = upload_ok(client, content)
    r = client.get(f"/v1/files/{f['id']}")
    assert r.status_code == 200
    assert r.json() == f
    r = client.get(f"/v1/files/{f['id']}/content")
    assert r.status_code == 200
    assert r.content == content  # byte for byte, BOM and CRLF included
    assert r.headers["content-length"] == str(len(content))
    assert r.headers["x-request-id"].startswith("req_")


def test_content_of_an_empty_output_file_is_empty(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()))
    b = wait_status(client, create_batch(client, f["id"]).json()["id"])
    assert b["status"] == "in_progress"
    for fid in (b["output_file_id"], b["error_file_id"]):
        meta = client.get(f"/v1/files/{fid}").json()
        assert meta["purpose"] == "batch_output" and meta["bytes"] == 0
        r = client.get(f"/v1/files/{fid}/content")
        assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("file_id", ["file-doesnotexist", "nope", "file-UPPER", "batch_abc", "x" * 300])
@pytest.mark.parametrize("suffix", ["", "/content"])
def test_unknown_file_is_404(client: TestClient, file_id: str, suffix: str) -> None:
    assert_error(client.get(f"/v1/files/{file_id}{suffix}"), 404, code="not_found", param="id",
                 type_="invalid_request_error")


def test_unknown_file_delete_is_404(client: TestClient) -> None:
    err = assert_error(client.delete("/v1/files/file-abc123"), 404, param="id")
    assert err["message"] == "No such File object: file-abc123"


def test_delete_then_404_and_bytes_gone(client: TestClient, settings: Settings) -> None:
    f = upload_ok(client, jsonl(line()))
    r = client.delete(f"/v1/files/{f['id']}")
    assert r.status_code == 200
    assert r.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert_error(client.get(f"/v1/files/{f['id']}"), 404)
    assert_error(client.get(f"/v1/files/{f['id']}/content"), 404)
    assert_error(client.delete(f"/v1/files/{f['id']}"), 404)
    assert not (settings.files_dir / f["id"]).exists()
    assert client.get("/v1/files").json()["data"] == []


def test_delete_file_in_use_by_a_running_batch_is_409(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()))
    b = wait_status(client, create_batch(client, f["id"]).json()["id"])
    assert b["status"] == "in_progress"
    for fid in (f["id"], b["output_file_id"], b["error_file_id"]):
        assert_error(client.delete(f"/v1/files/{fid}"), 409, code="file_in_use")
        assert client.get(f"/v1/files/{fid}").status_code == 200
    # once the batch is over, the files can go
    svc = client.app.state.services  # type: ignore[attr-defined]
    svc.batches.transition(b["id"], "cancelling", int(time.time()))
    svc.batches.transition(b["id"], "cancelled", int(time.time()))
    assert client.delete(f"/v1/files/{f['id']}").status_code == 200


def test_delete_file_of_a_failed_batch_is_allowed(client: TestClient) -> None:
    f = upload_ok(client, b"not json\n")
    b = wait_status(client, create_batch(client, f["id"]).json()["id"])
    assert b["status"] == "failed"
    assert client.delete(f"/v1/files/{f['id']}").status_code == 200


# -- list --------------------------------------------------------------------------------------------
def _upload_n(client: TestClient, n: int, purpose: str = "batch") -> list[str]:
    return [upload_ok(client, jsonl(line(str(i))), purpose=purpose)["id"] for i in range(n)]


def test_list_is_an_openai_list_newest_first_by_default(client: TestClient) -> None:
    ids = _upload_n(client, 3)
    r = client.get("/v1/files")
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == ids[::-1]
    assert page["first_id"] == ids[-1] and page["last_id"] == ids[0]
    assert page["has_more"] is False
    assert all(set(f) == FILE_FIELDS for f in page["data"])


def test_list_empty(client: TestClient) -> None:
    assert client.get("/v1/files").json() == {"object": "list", "data": [], "first_id": None, "last_id": None,
                                             "has_more": False}


def test_list_order_asc_and_desc_with_after(client: TestClient) -> None:
    ids = _upload_n(client, 5)
    asc = client.get("/v1/files", params={"order": "asc", "limit": 2}).json()
    assert [f["id"] for f in asc["data"]] == ids[:2] and asc["has_more"] is True
    nxt = client.get("/v1/files", params={"order": "asc", "limit": 2, "after": asc["last_id"]}).json()
    assert [f["id"] for f in nxt["data"]] == ids[2:4] and nxt["has_more"] is True
    last = client.get("/v1/files", params={"order": "asc", "limit": 2, "after": nxt["last_id"]}).json()
    assert [f["id"] for f in last["data"]] == ids[4:] and last["has_more"] is False

    desc = client.get("/v1/files", params={"limit": 3}).json()
    assert [f["id"] for f in desc["data"]] == ids[::-1][:3] and desc["has_more"] is True
    rest = client.get("/v1/files", params={"limit": 3, "after": desc["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == ids[::-1][3:] and rest["has_more"] is False


def test_list_after_a_deleted_file_still_works(client: TestClient) -> None:
    ids = _upload_n(client, 3)
    assert client.delete(f"/v1/files/{ids[1]}").status_code == 200
    page = client.get("/v1/files", params={"after": ids[1], "order": "asc"}).json()
    assert [f["id"] for f in page["data"]] == [ids[2]]


def test_list_filters_by_purpose(client: TestClient) -> None:
    batch_ids = _upload_n(client, 2)
    other = _upload_n(client, 1, purpose="user_data")
    assert [f["id"] for f in client.get("/v1/files", params={"purpose": "batch"}).json()["data"]] == batch_ids[::-1]
    assert [f["id"] for f in client.get("/v1/files", params={"purpose": "user_data"}).json()["data"]] == other


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"order": "up"}, "order"),
        ({"order": "ASC"}, "order"),
        ({"after": "file-nosuchfile"}, "after"),
        ({"after": "x" * 300}, "after"),
    ],
)
def test_list_bad_params_are_400(client: TestClient, params: dict[str, str], param: str) -> None:
    assert_error(client.get("/v1/files", params=params), 400, param=param)


def test_list_limit_bounds_are_inclusive(client: TestClient) -> None:
    _upload_n(client, 2)
    assert len(client.get("/v1/files", params={"limit": 1}).json()["data"]) == 1
    assert len(client.get("/v1/files", params={"limit": 10000}).json()["data"]) == 2


# -- retention ---------------------------------------------------------------------------------------
def test_sweep_deletes_expired_files_then_404(client: TestClient) -> None:
    short = upload_ok(client, jsonl(line()), data={"expires_after[seconds]": "3600"})
    default = upload_ok(client, jsonl(line()))
    forever = upload_ok(client, b"x", purpose="user_data", filename="x.txt")
    svc = client.app.state.services  # type: ignore[attr-defined]
    assert svc.sweep(now=short["created_at"] + 3599) == 0
    assert svc.sweep(now=short["created_at"] + 3600) == 1
    assert_error(client.get(f"/v1/files/{short['id']}"), 404)
    assert_error(client.get(f"/v1/files/{short['id']}/content"), 404)
    assert client.get(f"/v1/files/{default['id']}").status_code == 200
    assert svc.sweep(now=default["created_at"] + 30 * 86_400) == 1
    assert_error(client.get(f"/v1/files/{default['id']}"), 404)
    assert client.get(f"/v1/files/{forever['id']}").status_code == 200
    assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [forever["id"]]


def test_sweep_spares_files_of_a_running_batch(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()), data={"expires_after[seconds]": "3600"})
    b = wait_status(client, create_batch(client, f["id"]).json()["id"])
    assert b["status"] == "in_progress"
    svc = client.app.state.services  # type: ignore[attr-defined]
    assert svc.sweep(now=f["created_at"] + 10 * 86_400) == 0
    assert client.get(f"/v1/files/{f['id']}").status_code == 200


def test_output_expires_after_sets_output_and_error_files_expiry(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()))
    r = create_batch(client, f["id"], output_expires_after={"anchor": "created_at", "seconds": 7200})
    assert r.status_code == 200
    assert "output_expires_after" not in r.json()  # a create parameter only, never echoed
    b = wait_status(client, r.json()["id"])
    for fid in (b["output_file_id"], b["error_file_id"]):
        meta = client.get(f"/v1/files/{fid}").json()
        assert meta["expires_at"] == meta["created_at"] + 7200


def test_output_files_default_to_30_days(client: TestClient) -> None:
    f = upload_ok(client, jsonl(line()))
    b = wait_status(client, create_batch(client, f["id"]).json()["id"])
    meta = client.get(f"/v1/files/{b['output_file_id']}").json()
    assert meta["expires_at"] == meta["created_at"] + 30 * 86_400


@pytest.mark.parametrize("tail", [b"abc", b"abc\r\n--b", b"abc\r\n--b\r\n"])
def test_upload_cut_short_is_400_and_commits_nothing(client: TestClient, tail: bytes) -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n' + tail)
    r = client.post("/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 400, code="invalid_multipart")
    assert client.get("/v1/files").json()["data"] == []


def test_list_after_unknown_id_code(client: TestClient) -> None:
    assert_error(client.get("/v1/files", params={"after": "file-nosuch"}), 400, code="invalid_value", param="after")
