"""A real `runner serve` (API process + supervised engine child) driven by the official openai client."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

KEY = "sk-test-engine"
MODELS_YAML = """
models:
  - id: sim-chat
    backend: simulated
    max_tokens: 16
  - id: sim-embed
    backend: simulated
    task: embed
  - id: sim-crash
    backend: simulated
    max_tokens: 12
    engine_args: {tokens_per_second: 1500, max_inflight: 32}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m runner serve` with its engine, ready once /health shows the engine; `models_yaml`
    lets other test modules run the same server on their own models."""

    def __init__(self, tmp: Path, models_yaml: str = MODELS_YAML, *, env: dict[str, str] | None = None,
                 keys: tuple[str, ...] = (KEY,)) -> None:
        """`env`: extra settings; `keys`: RUNNER_API_KEYS (`client` uses the first). A second Server
        on the same `tmp` is a restart: same data dir, its log appended to the first's."""
        self.port = _free_port()
        models = tmp / "models.yaml"
        models.write_text(models_yaml)
        self.log = open(tmp / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUNNER_API_KEYS": ",".join(keys), "RUNNER_CHECKPOINT_INTERVAL": "0.1",
               "RUNNER_POLL_INTERVAL": "0.1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--port", str(self.port), "--data-dir", str(tmp / "data"),
             "--models", str(models)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "data"
        self.log_path = tmp / "server.log"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.engine_pid() is not None:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("server did not start:\n" + self.log_path.read_text())
            time.sleep(0.1)
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key=keys[0], max_retries=5)

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.base + "/health", timeout=5).json())

    def engine_pid(self) -> int | None:
        engine = self.health().get("engine") or {}
        pid = engine.get("pid")
        return int(pid) if pid else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _jsonl(lines: list[dict[str, Any]]) -> io.BytesIO:
    f = io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    f.name = "batch.jsonl"
    return f


def _wait(client: Any, batch_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status} {b.request_counts}"
        time.sleep(0.1)


def _rows(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    data = client.files.content(file_id).content
    assert data == b"" or data.endswith(b"\n"), "torn line"
    return [orjson.loads(x) for x in data.splitlines()]


def _exactly_once(client: Any, b: Any, ids: list[str]) -> tuple[list[Any], list[Any]]:
    out, err = _rows(client, b.output_file_id), _rows(client, b.error_file_id)
    assert sorted(r["custom_id"] for r in out + err) == sorted(ids)
    rc = b.request_counts
    assert (rc.total, rc.completed, rc.failed) == (len(ids), len(out), len(err))
    return out, err


def test_openai_client_end_to_end(server: Server) -> None:
    c = server.client
    chat = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "sim-chat", "messages": [{"role": "user", "content": f"hi {i}"}]}} for i in range(20)]
    chat.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "sim-chat", "messages": [], "n": 0}})
    f = c.files.create(file=_jsonl(chat), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = _wait(c, b.id, ("completed",))
    out, err = _exactly_once(c, b, [x["custom_id"] for x in chat])
    assert len(out) == 20 and err[0]["response"]["status_code"] == 400
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    assert b.usage is not None and b.usage.output_tokens > 0

    emb = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "sim-embed", "input": ["a", "b"]}} for i in range(5)]
    f = c.files.create(file=_jsonl(emb), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    b = _wait(c, b.id, ("completed",))
    out, _ = _exactly_once(c, b, [x["custom_id"] for x in emb])
    assert len(out[0]["response"]["body"]["data"]) == 2


def test_engine_sigkill_during_run(server: Server) -> None:
    c = server.client
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "sim-crash", "messages": [{"role": "user", "content": f"question {i}"}]}}
             for i in range(2000)]
    f = c.files.create(file=_jsonl(lines), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    _wait(c, b.id, ("in_progress",))
    kills, last_done = 0, -1
    deadline = time.monotonic() + 120
    while kills < 5:
        assert time.monotonic() < deadline, "not enough progress between kills"
        b = c.batches.retrieve(b.id)
        assert b.status == "in_progress", f"batch ended before 5 kills ({kills}): {b.status}"
        pid = server.engine_pid()
        done = b.request_counts.completed if b.request_counts else 0
        if pid is not None and done > last_done:
            os.kill(pid, signal.SIGKILL)
            kills += 1
            last_done = done
            while server.engine_pid() == pid:
                time.sleep(0.05)
        time.sleep(0.3)
    b = _wait(c, b.id, ("completed",), timeout=120)
    out, err = _exactly_once(c, b, [x["custom_id"] for x in lines])
    assert len(out) == 2000 and not err
    assert server.health()["engine"]["restarts"] >= 5
    # on disk, the finished files hold exactly the recorded bytes: no torn or duplicated tail
    for fid in (b.output_file_id, b.error_file_id):
        assert fid is not None
        assert (server.data / "files" / fid).stat().st_size == c.files.retrieve(fid).bytes
