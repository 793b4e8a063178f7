"""Engine fixtures: the API app in process (TestClient) plus a real Engine on the same data dir."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.engine.main import Engine
from runner.model_specs import ModelRegistry, parse_model_specs
from runner.settings import Settings

MODELS = {
    "models": [
        {"id": "sim-chat", "backend": "simulated", "task": "generate", "max_tokens": 32},
        {"id": "sim-embed", "backend": "simulated", "task": "embed", "engine_args": {"dimensions": 8}},
        {"id": "sim-slow", "backend": "simulated", "task": "generate", "max_tokens": 32,
         "engine_args": {"tokens_per_second": 400, "max_inflight": 16}},
        {"id": "sim-other", "backend": "simulated", "task": "generate", "max_tokens": 8},
    ]
}


@pytest.fixture
def registry() -> ModelRegistry:
    return parse_model_specs(MODELS)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0,
                    checkpoint_interval=0.05, poll_interval=0.05)


class Harness:
    """The API (TestClient) and a running Engine sharing one data dir."""

    def __init__(self, client: TestClient, settings: Settings, registry: ModelRegistry) -> None:
        self.client = client
        self.settings = settings
        self.registry = registry
        self.engine: Engine | None = None
        self.auth: dict[str, dict[str, str]] = {}  # batch or file id -> the headers of its owner's key

    def start_engine(self) -> Engine:
        self.engine = Engine(self.settings, self.registry).start()
        return self.engine

    def stop_engine(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            assert self.engine.error is None, self.engine.error
            self.engine = None

    def submit(self, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions",
               headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload and create a batch; `headers` (an Authorization header) make it that key's."""
        data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
        r = self.client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", data)},
                             headers=headers)
        assert r.status_code == 200, r.text
        r = self.client.post("/v1/batches", json={"input_file_id": r.json()["id"], "endpoint": endpoint,
                                                   "completion_window": "24h"}, headers=headers)
        assert r.status_code == 200, r.text
        if headers:
            self.auth[r.json()["id"]] = headers
        return dict(r.json())

    def batch(self, batch_id: str) -> dict[str, Any]:
        headers = self.auth.get(batch_id)
        r = self.client.get(f"/v1/batches/{batch_id}", headers=headers)
        assert r.status_code == 200, r.text
        if headers:
            for key in ("output_file_id", "error_file_id"):
                if r.json()[key]:
                    self.auth[r.json()[key]] = headers
        return dict(r.json())

    def wait(self, batch_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            b = self.batch(batch_id)
            if until(b):
                return b
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; batch is {b['status']} {b['request_counts']}")
            time.sleep(0.02)

    def wait_status(self, batch_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait(batch_id, lambda b: b["status"] in statuses, timeout)

    def rows(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        r = self.client.get(f"/v1/files/{file_id}/content", headers=self.auth.get(file_id))
        assert r.status_code == 200, r.text
        assert r.content == b"" or r.content.endswith(b"\n"), "torn last line"
        return [orjson.loads(line) for line in r.content.splitlines()]


def chat_line(i: int, model: str = "sim-chat", **body: Any) -> dict[str, Any]:
    b = {"model": model, "messages": [{"role": "user", "content": f"question number {i}"}], **body}
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}


def check_exactly_once(h: Harness, batch: dict[str, Any], custom_ids: list[str]) -> tuple[list[Any], list[Any]]:
    """Every input custom_id exactly once across output + error files; counts add up."""
    out, err = h.rows(batch["output_file_id"]), h.rows(batch["error_file_id"])
    seen = [r["custom_id"] for r in out + err]
    assert sorted(seen) == sorted(custom_ids), "custom_ids missing or duplicated"
    rc = batch["request_counts"]
    assert rc["total"] == len(custom_ids)
    assert rc["completed"] == len(out) and rc["failed"] == len(err)
    assert rc["completed"] + rc["failed"] == rc["total"]
    for r in out:
        assert r["error"] is None and r["response"]["status_code"] == 200
        assert r["id"].startswith("batch_req_") and r["response"]["request_id"].startswith("req_")
    for r in err:
        assert (r["response"] is None) != (r["error"] is None)
    return out, err


@pytest.fixture
def harness(settings: Settings, registry: ModelRegistry) -> Iterator[Harness]:
    with TestClient(create_app(settings, registry)) as client:
        h = Harness(client, settings, registry)
        try:
            yield h
        finally:
            h.stop_engine()
