"""Idempotency-Key on POST /v1/batches and POST /v1/files (#16): through the official openai SDK
against a real `runner serve`, and in process where the clock has to move (24 h) or a crashed
request's claim has to be planted in the database."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.api.auth import owner_of_key
from runner.api.idempotency import BATCHES, json_hash
from runner.model_specs import ModelRegistry
from runner.settings import Settings
from runner.store import Database, IdempotencyStore
from runner.store.idempotency import CLAIM_TIMEOUT, KEY_TTL
from tests.api_helpers import CHAT, create_batch, jsonl, line, upload, upload_ok
from tests.test_server_sdk import Server

KEY_A, KEY_B = "sk-idem-a", "sk-idem-b"
REPLAYED = "idempotent-replayed"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("idem"), f"{KEY_A},{KEY_B}")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _sdk(server: Server, key: str = KEY_A, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, **{"max_retries": 0, **kw})


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    client = _sdk(server)
    yield client
    client.close()


def _key() -> str:
    return f"test-{uuid.uuid4()}"


def _input(sdk: openai.OpenAI, *custom_ids: str) -> str:
    return sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(*(line(c) for c in custom_ids)))),
                            purpose="batch").id


def _batch_ids(sdk: openai.OpenAI) -> list[str]:
    return [b.id for b in sdk.batches.list(limit=100)]


def _file_ids(sdk: openai.OpenAI) -> list[str]:
    return [f.id for f in sdk.files.list()]


# -- batches -------------------------------------------------------------------------------------------


def test_same_key_same_body_replays_the_first_batch(sdk: openai.OpenAI) -> None:
    file_id, key = _input(sdk, "a", "b"), _key()
    before = _batch_ids(sdk)
    first = sdk.batches.with_raw_response.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                                                 metadata={"run": "1"}, extra_headers={"Idempotency-Key": key})
    again = sdk.batches.with_raw_response.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                                                 metadata={"run": "1"}, extra_headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert REPLAYED not in first.headers and again.headers[REPLAYED] == "true"
    assert again.content == first.content  # the first answer, byte for byte
    assert again.parse().id == first.parse().id
    after = _batch_ids(sdk)
    assert len(after) == len(before) + 1 and first.parse().id in after  # one batch, not two
    # The replay is the first answer, not the batch now: it says validating even once validation ran.
    assert orjson.loads(again.content)["status"] == "validating"


def test_same_key_other_body_is_refused(sdk: openai.OpenAI) -> None:
    file_id, other, key = _input(sdk, "a"), _input(sdk, "b"), _key()
    made = sdk.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                              extra_headers={"Idempotency-Key": key})
    before = _batch_ids(sdk)
    for changed in ({"input_file_id": other}, {"metadata": {"x": "y"}}):
        body: dict[str, Any] = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **changed}
        with pytest.raises(openai.UnprocessableEntityError) as exc:
            sdk.batches.create(**body, extra_headers={"Idempotency-Key": key})
        assert exc.value.status_code == 422 and exc.value.code == "idempotency_key_reused"
        assert exc.value.param == "Idempotency-Key"
    assert _batch_ids(sdk) == before and made.id in before


def test_the_body_hash_is_canonical_json(server: Server) -> None:
    """The same fields in another order (or spacing) are the same request: a replay, not a 422."""
    sdk = _sdk(server)
    file_id, key = _input(sdk, "a"), _key()
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": key, "Content-Type": "application/json"}
    one = httpx.post(server.url + "/v1/batches", headers=headers,
                     content=b'{"input_file_id": "%s", "endpoint": "%s", "completion_window": "24h"}'
                     % (file_id.encode(), CHAT.encode()))
    two = httpx.post(server.url + "/v1/batches", headers=headers,
                     content=b'{"completion_window":"24h","endpoint":"%s","input_file_id":"%s"}'
                     % (CHAT.encode(), file_id.encode()))
    assert one.status_code == two.status_code == 200, two.text
    assert two.headers[REPLAYED] == "true" and two.json()["id"] == one.json()["id"]


def test_header_name_is_case_insensitive(server: Server, sdk: openai.OpenAI) -> None:
    file_id, key = _input(sdk, "a"), _key()
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    auth = {"Authorization": f"Bearer {KEY_A}"}
    one = httpx.post(server.url + "/v1/batches", json=body, headers={**auth, "idempotency-key": key})
    two = httpx.post(server.url + "/v1/batches", json=body, headers={**auth, "IDEMPOTENCY-KEY": key})
    assert one.status_code == two.status_code == 200
    assert two.headers[REPLAYED] == "true" and two.json()["id"] == one.json()["id"]


def test_keys_are_per_owner(server: Server, sdk: openai.OpenAI) -> None:
    other = _sdk(server, KEY_B)
    key = _key()
    mine = sdk.batches.with_raw_response.create(input_file_id=_input(sdk, "a"), endpoint=CHAT,
                                                completion_window="24h", extra_headers={"Idempotency-Key": key})
    # Another owner, the same key string, another body: its own key, so neither 422 nor a replay.
    theirs = other.batches.with_raw_response.create(input_file_id=_input(other, "b"), endpoint=CHAT,
                                                    completion_window="24h", extra_headers={"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 200
    assert REPLAYED not in theirs.headers and theirs.parse().id != mine.parse().id
    assert theirs.parse().id in _batch_ids(other) and theirs.parse().id not in _batch_ids(sdk)
    other.close()


def test_a_failed_first_request_keeps_nothing(server: Server, sdk: openai.OpenAI) -> None:
    """A 4xx first answer releases the key: the same body fails afresh (no replay header), and another
    body under the key is taken (it would be 422 if the failure had been kept)."""
    file_id, key = _input(sdk, "a"), _key()
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as bad:
            sdk.batches.create(input_file_id=file_id, endpoint="/v1/nowhere", completion_window="24h",  # type: ignore[arg-type]
                               extra_headers={"Idempotency-Key": key})
        assert bad.value.code == "invalid_endpoint" and REPLAYED not in bad.value.response.headers
    with pytest.raises(openai.NotFoundError):  # a 404 (no such input file) is released too
        sdk.batches.create(input_file_id="file-" + "0" * 24, endpoint=CHAT, completion_window="24h",
                           extra_headers={"Idempotency-Key": key})
    made = sdk.batches.with_raw_response.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                                                extra_headers={"Idempotency-Key": key})
    assert made.status_code == 200 and REPLAYED not in made.headers


def test_invalid_keys_are_refused(server: Server, sdk: openai.OpenAI) -> None:
    file_id = _input(sdk, "a")
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    auth = {"Authorization": f"Bearer {KEY_A}"}
    before = _batch_ids(sdk)
    for bad in ("", "k" * 256, "k" * 100_000):
        r = httpx.post(server.url + "/v1/batches", json=body, headers={**auth, "Idempotency-Key": bad})
        assert r.status_code == 400, (len(bad), r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_idempotency_key" and err["param"] == "Idempotency-Key"
        assert len(err["message"]) < 300  # the key is clipped, never echoed whole
    upload_r = httpx.post(server.url + "/v1/files", headers={**auth, "Idempotency-Key": ""},
                          files={"file": ("in.jsonl", jsonl(line()))}, data={"purpose": "batch"})
    assert upload_r.status_code == 400 and upload_r.json()["error"]["code"] == "invalid_idempotency_key"
    assert _batch_ids(sdk) == before
    longest = httpx.post(server.url + "/v1/batches", json=body, headers={**auth, "Idempotency-Key": "k" * 255})
    assert longest.status_code == 200


# -- files ---------------------------------------------------------------------------------------------


def test_upload_twice_is_one_file(sdk: openai.OpenAI) -> None:
    key, content = _key(), jsonl(line("a"), line("b"))
    before = _file_ids(sdk)
    first = sdk.files.with_raw_response.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                               extra_headers={"Idempotency-Key": key})
    again = sdk.files.with_raw_response.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                               extra_headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert again.headers[REPLAYED] == "true" and REPLAYED not in first.headers
    assert again.content == first.content
    after = _file_ids(sdk)
    assert len(after) == len(before) + 1 and first.parse().id in after
    assert sdk.files.content(first.parse().id).content == content
    # Another byte, another name or another purpose under the same key: refused, nothing stored.
    for name, data, purpose in (("in.jsonl", content + b"\n", "batch"), ("other.jsonl", content, "batch"),
                                ("in.jsonl", content, "user_data")):
        with pytest.raises(openai.UnprocessableEntityError) as exc:
            sdk.files.create(file=(name, io.BytesIO(data)), purpose=purpose,  # type: ignore[arg-type]
                             extra_headers={"Idempotency-Key": key})
        assert exc.value.code == "idempotency_key_reused"
    assert _file_ids(sdk) == after


def test_a_deleted_file_is_not_replayed(sdk: openai.OpenAI) -> None:
    """The same upload under the same key after its file was deleted makes a new file, not a replay
    naming one that answers 404 (schemathesis's stateful check, ST302, found that)."""
    key, content = _key(), jsonl(line("a"))
    first = sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                             extra_headers={"Idempotency-Key": key})
    sdk.files.delete(first.id)
    again = sdk.files.with_raw_response.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                               extra_headers={"Idempotency-Key": key})
    assert again.status_code == 200 and REPLAYED not in again.headers
    new_id = again.parse().id
    assert new_id != first.id and sdk.files.retrieve(new_id).id == new_id
    # and the new answer is the one replayed from now on
    third = sdk.files.with_raw_response.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                               extra_headers={"Idempotency-Key": key})
    assert third.headers[REPLAYED] == "true" and third.parse().id == new_id


def test_a_failed_upload_keeps_nothing(sdk: openai.OpenAI) -> None:
    key, content = _key(), jsonl(line("a"))
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="nonsense",  # type: ignore[arg-type]
                         extra_headers={"Idempotency-Key": key})
    assert bad.value.code == "invalid_purpose"
    ok = sdk.files.with_raw_response.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                            extra_headers={"Idempotency-Key": key})
    assert ok.status_code == 200 and REPLAYED not in ok.headers


# -- concurrency ---------------------------------------------------------------------------------------


def _at_once(n: int, call: Any) -> list[Any]:
    """Run call() in n threads released together; their results (or exceptions)."""
    gate, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = call()
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_identical_creates_at_once_make_one_batch(server: Server, sdk: openai.OpenAI) -> None:
    file_id, key = _input(sdk, "a"), _key()
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": key}
    before = set(_batch_ids(sdk))
    with httpx.Client(base_url=server.url, headers=headers) as http:  # no retries: see every first answer
        answers = _at_once(8, lambda: http.post("/v1/batches", json=body))
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    made = [a for a in answers if a.status_code == 200 and REPLAYED not in a.headers]
    replays = [a for a in answers if a.status_code == 200 and REPLAYED in a.headers]
    busy = [a for a in answers if a.status_code == 409]
    assert len(made) == 1 and len(made) + len(replays) + len(busy) == 8, [a.status_code for a in answers]
    assert {a.json()["id"] for a in replays} <= {made[0].json()["id"]}
    for a in busy:
        assert a.json()["error"]["code"] == "idempotency_key_in_use" and a.headers["retry-after"] == "1"
    assert set(_batch_ids(sdk)) - before == {made[0].json()["id"]}


def test_identical_uploads_at_once_make_one_file(sdk: openai.OpenAI, server: Server) -> None:
    """Through the SDK with its retries on: a 409 is retried (after Retry-After) into the replay, so
    every caller ends up with the one file."""
    key, content = _key(), jsonl(line("a"), line("b"), line("c"))
    retrying = _sdk(server, max_retries=5)
    before = set(_file_ids(sdk))
    got = _at_once(6, lambda: retrying.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch",
                                                    extra_headers={"Idempotency-Key": key}))
    retrying.close()
    assert all(isinstance(g, openai.types.FileObject) for g in got), got
    ids = {g.id for g in got}
    assert len(ids) == 1 and set(_file_ids(sdk)) - before == ids


# -- what the pinned SDK sends by itself ---------------------------------------------------------------


def test_the_sdk_sends_no_key_of_its_own_unless_told(server: Server) -> None:
    """openai's _base_client sends `Idempotency-Key: stainless-python-retry-<uuid>` on non-GET requests
    only when the client sets `_idempotency_header`; the OpenAI client leaves it None, so plain calls
    carry no key and two creates are two batches. A client that sets it gets a fresh key per call (the
    same on that call's retries): two calls are still two batches, and its keys are accepted."""
    sent: list[str | None] = []

    def note(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/batches":
            sent.append(request.headers.get("idempotency-key"))

    http = httpx.Client(event_hooks={"request": [note]})
    plain = _sdk(server, http_client=http)
    assert plain._idempotency_header is None  # the pinned SDK: no key unless asked
    file_id = _input(plain, "a")
    made = [plain.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h").id
            for _ in range(2)]
    assert sent == [None, None] and made[0] != made[1]

    plain._idempotency_header = "Idempotency-Key"  # what a Stainless client with the feature does
    keyed = [plain.batches.with_raw_response.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
             for _ in range(2)]
    assert [k.status_code for k in keyed] == [200, 200] and REPLAYED not in keyed[1].headers
    assert keyed[0].parse().id != keyed[1].parse().id
    assert all(k and k.startswith("stainless-python-retry-") for k in sent[2:]) and sent[2] != sent[3]
    plain.close()


# -- in process: the clock and crashed claims -------------------------------------------------------


@pytest.fixture
def app_client(settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings, registry)) as c:
        yield c


def test_a_key_expires_after_24_hours(app_client: TestClient) -> None:
    svc = app_client.app.state.services  # type: ignore[attr-defined]
    file_id, key = upload_ok(app_client, jsonl(line()))["id"], _key()
    first = create_batch(app_client, file_id, headers={"Idempotency-Key": key})
    assert first.status_code == 200
    # Within 24 h the sweep keeps it: the same body replays, another body is refused.
    svc.sweep(now=int(time.time()) + KEY_TTL - 60)
    assert create_batch(app_client, file_id, headers={"Idempotency-Key": key}).headers[REPLAYED] == "true"
    assert create_batch(app_client, file_id, metadata={"a": "b"},
                        headers={"Idempotency-Key": key}).status_code == 422
    rows = svc.db.query("SELECT COUNT(*) AS n FROM idempotency_keys")[0]["n"]
    svc.sweep(now=int(time.time()) + KEY_TTL + 60)
    assert svc.db.query("SELECT COUNT(*) AS n FROM idempotency_keys")[0]["n"] == rows - 1
    again = create_batch(app_client, file_id, metadata={"a": "b"}, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]


def test_expired_rows_are_not_replayed_before_the_sweep(tmp_path: Path) -> None:
    store = IdempotencyStore(Database(tmp_path / "db.sqlite"), started_at=0.0)
    t = 1_000_000.0
    assert store.claim("o", BATCHES, "k", "h1", t).outcome == "claimed"
    assert store.complete("o", BATCHES, "k", t, 200, '{"id": 1}')
    assert store.claim("o", BATCHES, "k", "h1", t + KEY_TTL - 1).outcome == "replay"
    assert store.claim("o", BATCHES, "k", "h2", t + KEY_TTL - 1).outcome == "reused"
    assert store.claim("o", BATCHES, "k", "h2", t + KEY_TTL + 1).outcome == "claimed"  # expired: free
    assert store.sweep(t + 2 * KEY_TTL + 2) == 1


def test_an_unanswered_claim_is_freed_after_a_while(tmp_path: Path) -> None:
    store = IdempotencyStore(Database(tmp_path / "db.sqlite"), started_at=0.0)
    t = 1_000_000.0
    first = store.claim("o", BATCHES, "k", "h", t)
    assert first.outcome == "claimed"
    assert store.claim("o", BATCHES, "k", "h", t + CLAIM_TIMEOUT - 1).outcome == "in_use"
    taken = store.claim("o", BATCHES, "k", "h", t + CLAIM_TIMEOUT + 1)
    assert taken.outcome == "claimed"
    # The dead request's late answer or release must not touch the new claim.
    assert not store.complete("o", BATCHES, "k", first.token, 200, "{}")
    store.release("o", BATCHES, "k", first.token)
    assert store.claim("o", BATCHES, "k", "h", t + CLAIM_TIMEOUT + 2).outcome == "in_use"


def _plant_claim(data_dir: Path, key: str, body: dict[str, Any], created_at: float, who: str = "local") -> None:
    """A claim row as a request that died mid-way leaves it (status NULL), written by another connection."""
    with sqlite3.connect(data_dir / "runner.db") as conn:
        conn.execute("INSERT INTO idempotency_keys (owner, route, key, body_hash, status, response, created_at)"
                     " VALUES (?, ?, ?, ?, NULL, NULL, ?)", (who, BATCHES, key, json_hash(body), created_at))


def test_a_claim_in_progress_is_409_and_one_from_before_the_restart_is_free(
        app_client: TestClient, settings: Settings) -> None:
    svc = app_client.app.state.services  # type: ignore[attr-defined]
    assert Path(svc.settings.db_path) == settings.data_path / "runner.db"
    file_id = upload_ok(app_client, jsonl(line()))["id"]
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    owner = svc.db.query("SELECT owner FROM files WHERE id = ?", (file_id,))[0]["owner"]
    live, dead = _key(), _key()
    _plant_claim(settings.data_path, live, body, time.time(), owner)  # this process's: in progress
    _plant_claim(settings.data_path, dead, body, svc.started_at - 1, owner)  # before this process started
    busy = app_client.post("/v1/batches", json=body, headers={"Idempotency-Key": live})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert busy.headers["retry-after"] == "1"
    freed = app_client.post("/v1/batches", json=body, headers={"Idempotency-Key": dead})
    assert freed.status_code == 200 and REPLAYED not in freed.headers
    again = app_client.post("/v1/batches", json=body, headers={"Idempotency-Key": dead})
    assert again.headers[REPLAYED] == "true" and again.json()["id"] == freed.json()["id"]


def test_without_a_key_nothing_is_kept(app_client: TestClient) -> None:
    svc = app_client.app.state.services  # type: ignore[attr-defined]
    file_id = upload_ok(app_client, jsonl(line()))["id"]
    a, b = create_batch(app_client, file_id), create_batch(app_client, file_id)
    assert a.json()["id"] != b.json()["id"]
    assert upload(app_client, jsonl(line())).status_code == 200
    assert svc.db.query("SELECT COUNT(*) AS n FROM idempotency_keys")[0]["n"] == 0


def test_owner_of_key_is_what_keys_are_stored_under(server: Server, sdk: openai.OpenAI) -> None:
    """Keys are stored per owner (a hash of the API key), never under the API key itself."""
    key = _key()
    sdk.batches.create(input_file_id=_input(sdk, "a"), endpoint=CHAT, completion_window="24h",
                       extra_headers={"Idempotency-Key": key})
    with sqlite3.connect(server.tmp / "data" / "runner.db") as conn:
        owners = [r[0] for r in conn.execute("SELECT owner FROM idempotency_keys WHERE key = ?", (key,))]
    assert owners == [owner_of_key(KEY_A)]
