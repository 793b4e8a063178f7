"""A real `runner serve` (API and engine process) for the third-party client tests.

Each client runs as its own process against it, unchanged, the way a researcher would point it at
runner: OPENAI_BASE_URL and OPENAI_API_KEY in its environment, nothing patched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

KEY = "sk-client-test-key"

SIM_MODELS_YAML = """\
models:
  - id: sim-chat
    backend: simulated
    task: generate
    max_tokens: 48
"""

# The shipped SmolLM2 on the transformers backend, the CPU default when vLLM is not there; a low cap
# keeps a CPU decode short (the answer to the eval's question comes in the first dozen tokens).
SMOLLM2_MODELS_YAML = """\
models:
  - id: smollm2-135m-instruct
    path: HuggingFaceTB/SmolLM2-135M-Instruct
    backend: transformers
    task: generate
    max_tokens: 32
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def model_cache() -> Path:
    """Where the converted SmolLM2 is kept between runs (shared with tests/test_real_models.py)."""
    return Path(os.environ.get("RUNNER_TEST_MODEL_CACHE", Path.home() / ".cache" / "runner-test")) / "models"


@dataclass
class Runner:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client_env(self) -> dict[str, str]:
        """The environment a client process gets: the official variables, pointed at this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "OPENAI_"))}
        env.update({"OPENAI_BASE_URL": self.url + "/v1", "OPENAI_API_KEY": KEY})
        return env

    def get(self, path: str) -> httpx.Response:
        r = httpx.get(self.url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r

    def batches(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get("/v1/batches?limit=100").json()["data"]
        return data

    def jsonl(self, file_id: str) -> list[dict[str, Any]]:
        """The rows of a file on the server (a batch's input, output or error file)."""
        return [json.loads(row) for row in self.get(f"/v1/files/{file_id}/content").text.splitlines()]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def runner_serve(tmp: Path, models_yaml: str, *, share_model_cache: bool = False,
                 timeout: float = 60.0) -> Iterator[Runner]:
    """`python -m runner serve` with its engine, on a free port and its own data dir, until the block ends."""
    tmp.mkdir(parents=True, exist_ok=True)
    models = tmp / "models.yaml"
    models.write_text(models_yaml)
    data = tmp / "data"
    data.mkdir()
    if share_model_cache:
        # the GGUF -> HF conversion (~20 s) happens once per machine, not once per test
        model_cache().mkdir(parents=True, exist_ok=True)
        (data / "models").symlink_to(model_cache())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({"RUNNER_API_KEYS": KEY, "RUNNER_RATE_LIMIT": "0", "RUNNER_LOG_LEVEL": "info"})
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--port", str(port), "--data-dir", str(data),
             "--models", str(models)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Runner(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(server: Runner, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"runner serve exited {server.proc.returncode}: {server.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"runner serve not healthy after {timeout}s: {server.tail()}")
        time.sleep(0.2)
