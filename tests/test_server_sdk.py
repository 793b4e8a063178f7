"""A real `runner serve` on a free port, driven by the official openai package (slow)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

pytestmark = pytest.mark.slow

MODELS_YAML = """
models:
  - id: sim-chat
    backend: simulated
    task: generate
  - id: sim-embed
    backend: simulated
    task: embed
"""
KEY = "sk-sdk-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m runner serve --no-engine` in a subprocess, stopped at teardown."""

    def __init__(self, tmp: Path, api_keys: str | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        models = tmp / "models.yaml"
        models.write_text(MODELS_YAML, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        if api_keys is not None:
            env["RUNNER_API_KEYS"] = api_keys
        self.log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--no-engine", "--port", str(self.port),
             "--data-dir", str(tmp / "data"), "--models", str(models)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.tmp = tmp

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / "server.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _serve(tmp: Path, api_keys: str | None) -> Iterator[Server]:
    server = Server(tmp, api_keys)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("open"), None)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("keyed"), KEY)


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused-without-keys", max_retries=0)
    yield client
    client.close()


def _jsonl(*custom_ids: str, model: str = "sim-chat") -> bytes:
    rows = [{"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}} for c in custom_ids]
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _wait(sdk: openai.OpenAI, batch_id: str, timeout: float = 15.0) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while True:
        b = sdk.batches.retrieve(batch_id)
        if b.status != "validating" or time.monotonic() > deadline:
            return b
        time.sleep(0.05)


def test_files_through_the_sdk(sdk: openai.OpenAI) -> None:
    content = _jsonl("a", "b")
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
    assert f.id.startswith("file-") and f.object == "file" and f.bytes == len(content)
    assert f.purpose == "batch" and f.filename == "input.jsonl" and isinstance(f.created_at, int)
    assert sdk.files.retrieve(f.id).id == f.id
    assert sdk.files.content(f.id).content == content
    assert f.id in [x.id for x in sdk.files.list()]
    assert f.id in [x.id for x in sdk.files.list(purpose="batch", order="asc", limit=1)]  # auto-paginates
    deleted = sdk.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.files.retrieve(f.id)
    assert exc.value.status_code == 404 and exc.value.code == "not_found"
    assert exc.value.request_id and exc.value.request_id.startswith("req_")


def test_batches_through_the_sdk(sdk: openai.OpenAI) -> None:
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(_jsonl("a", "b", "c"))), purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                           metadata={"run": "sdk"})
    assert b.status == "validating" and b.metadata == {"run": "sdk"}
    b = _wait(sdk, b.id)
    assert b.status == "in_progress"
    assert b.request_counts is not None and b.request_counts.total == 3
    assert b.model == "sim-chat" and b.output_file_id and b.error_file_id
    assert sdk.files.content(b.output_file_id).content == b""

    # the input file is in use: 409
    with pytest.raises(openai.ConflictError) as conflict:
        sdk.files.delete(f.id)
    assert conflict.value.status_code == 409 and conflict.value.code == "file_in_use"

    cancelled = sdk.batches.cancel(b.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None


def test_failed_validation_through_the_sdk(sdk: openai.OpenAI) -> None:
    f = sdk.files.create(file=("bad.jsonl", io.BytesIO(_jsonl("a", "a") + b"{not json\n")), purpose="batch")
    b = _wait(sdk, sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h").id)
    assert b.status == "failed" and b.errors is not None and b.errors.data is not None
    assert [(e.code, e.line, e.param) for e in b.errors.data] == [("duplicate_custom_id", 2, "custom_id"),
                                                                  ("invalid_json", 3, None)]
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(b.id)


def test_batch_list_auto_pagination(sdk: openai.OpenAI) -> None:
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(_jsonl("a"))), purpose="batch")
    mine = [sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(25)]
    first = sdk.batches.list(limit=10)
    assert len(first.data) == 10 and first.has_more is True
    seen = [b.id for b in sdk.batches.list(limit=10)]  # iterating follows `after` across pages
    assert len(seen) == len(set(seen))
    assert seen[:25] == mine[::-1]  # newest first
    assert len([b.id for b in sdk.batches.list()]) == len(seen)  # default limit 20, same walk


def test_sdk_error_classes(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.batches.create(input_file_id="file-x", endpoint="/v1/moderations", completion_window="24h")
    assert bad.value.status_code == 400 and bad.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as purpose:
        sdk.files.create(file=("x.jsonl", io.BytesIO(b"x")), purpose="batchy")  # type: ignore[arg-type]
    assert purpose.value.code == "invalid_purpose"
    # any name is taken for purpose batch (#13): lines are checked when a batch is created
    assert sdk.files.create(file=("x.txt", io.BytesIO(b"x")), purpose="batch").filename == "x.txt"
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-doesnotexist", endpoint="/v1/chat/completions",
                           completion_window="24h")


def test_model_endpoints_over_http(server: Server) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["sim-chat", "sim-embed"]
    r = httpx.get(server.url + "/v1/model-config")
    assert [m["id"] for m in r.json()["active_models"]] == ["sim-chat", "sim-embed"]
    assert r.headers["x-request-id"].startswith("req_")
    server.log.flush()  # it says so at start (the whole log: the module's other tests write after it)
    assert "no API keys configured" in (server.tmp / "server.log").read_text(errors="replace")


def test_authentication_error(keyed_server: Server) -> None:
    wrong = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        wrong.files.list().data  # noqa: B018 - the request is the point
    assert exc.value.status_code == 401 and exc.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=KEY, max_retries=0)
    f = right.files.create(file=("in.jsonl", io.BytesIO(_jsonl("a"))), purpose="batch")
    assert right.files.retrieve(f.id).id == f.id
    with pytest.raises(openai.AuthenticationError):
        wrong.files.retrieve(f.id)


def test_restart_keeps_everything(tmp_path: Path) -> None:
    gen = _serve(tmp_path, None)
    server = next(gen)
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(_jsonl("a", "b"))), purpose="batch")
    b = _wait(sdk, sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h").id)
    gen.close()  # stops the server
    with pytest.raises(StopIteration):
        next(gen)
    for again in _serve(tmp_path, None):
        sdk2 = openai.OpenAI(base_url=again.url + "/v1", api_key="x", max_retries=0)
        assert sdk2.batches.retrieve(b.id).model_dump() == b.model_dump()
        assert sdk2.files.content(f.id).content == _jsonl("a", "b")


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    r = subprocess.run(
        [sys.executable, "-m", "runner", "serve", "--no-engine", "--host", "0.0.0.0", "--port", str(_free_port()),
         "--data-dir", str(tmp_path / "d"), "--models", str(models)],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 2
    assert "RUNNER_API_KEYS" in r.stderr


def test_check_config(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    ok = subprocess.run([sys.executable, "-m", "runner", "check-config", "--models", str(models)],
                        env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "sim-chat" in ok.stdout
    models.write_text("models:\n  - id: x\n    backend: nope\n")
    bad = subprocess.run([sys.executable, "-m", "runner", "check-config", "--models", str(models)],
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.startswith("runner: error:") and len(bad.stderr.splitlines()) == 1
