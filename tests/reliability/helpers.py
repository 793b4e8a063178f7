"""Helpers for the reliability suites: error-shape checks, upload helpers and a live server.

`start_server(...)` starts a real `python -m runner serve --no-engine` subprocess on a free port with
its own data dir and a models.yaml of simulated models, waits for /health, and stops it at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

SIM_MODELS_YAML = """\
models:
  - id: sim-chat
    backend: simulated
    task: generate
    max_tokens: 32
  - id: sim-chat-2
    backend: simulated
    task: generate
  - id: sim-embed
    backend: simulated
    task: embed
"""

# Statuses a batch reaches once validation is over (the engine is off in most reliability tests).
SETTLED = ("completed", "failed", "expired", "cancelled", "in_progress")


def assert_error_shape(resp: Any, status: int | None = None) -> dict[str, Any]:
    """The response is an OpenAI error: {"error": {message, type, param, code}}, never a 5xx
    unless `status` says so."""
    if status is not None:
        assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.status_code >= 400, resp.text[:500]
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    assert resp.headers.get("x-request-id", "").startswith("req_")
    return err


def chat_line(cid: str, model: str = "sim-chat", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"hi {cid}"}], **body},
    }


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def upload(client: Any, content: bytes, filename: str = "in.jsonl", purpose: str = "batch",
           headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/files", files={"file": (filename, content, "application/jsonl")},
                       data={"purpose": purpose}, headers=headers)


def wait_batch(client: Any, batch_id: str, headers: dict[str, str] | None = None,
               timeout: float = 20.0, until: tuple[str, ...] = SETTLED) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v1/batches/{batch_id}", headers=headers)
        assert resp.status_code == 200, resp.text
        batch: dict[str, Any] = resp.json()
        if batch["status"] in until:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch['status']} after {timeout}s")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)


def start_server(tmp: Path, *, env: dict[str, str] | None = None, data_dir: Path | None = None,
                 engine: bool = False, timeout: float = 30.0, models_yaml: str = SIM_MODELS_YAML) -> LiveServer:
    tmp.mkdir(parents=True, exist_ok=True)
    models = tmp / "models.yaml"
    models.write_text(models_yaml)
    data = data_dir or tmp / "data"
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    full_env.update({"RUNNER_RATE_LIMIT": "0", "RUNNER_LOG_LEVEL": "warning", "RUNNER_BACKEND": "simulated"})
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "runner", "serve", "--port", str(port), "--data-dir", str(data),
           "--models", str(models)]
    if not engine:
        cmd.append("--no-engine")
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not answer /health in {timeout}s: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return LiveServer(url=url, data_dir=data, proc=proc, log=log)


def stop_server(server: LiveServer) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
