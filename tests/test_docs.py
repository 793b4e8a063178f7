"""README: its commands run as written from the repo root, and its curl example works (#11)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BARE = re.compile(r"^\s*(runner|python3?|pytest|ruff|pip)(\s|$)")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_commands_run_from_the_repo_root_without_an_activated_venv() -> None:
    bare = [line for block in _bash_blocks() for line in block.splitlines() if BARE.match(line)]
    assert not bare, f"README commands that need an activated venv: {bare}"


def _curl_block() -> str:
    section = README[README.index("### curl"):]
    return _bash_blocks_of(section)[0]


def _bash_blocks_of(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


MODELS = """models:
  - id: smollm2-135m-instruct
    backend: simulated
    max_tokens: 64
    engine_args: {tokens_per_second: 25}
"""


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_curl_example_runs_and_cancels_a_running_batch(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(MODELS)
    from tests.reliability.helpers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--port", str(port), "--data-dir",
                               str(tmp_path / "data"), "--models", str(tmp_path / "models.yaml")],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", _curl_block()], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env={**env, "BASE": f"http://127.0.0.1:{port}/v1"})
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    first = json.loads(lines[0])
    assert first["status"] == "completed" and first["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    answers = [json.loads(x) for x in lines[1:3]]
    assert sorted(a["custom_id"] for a in answers) == ["q1", "q2"] and all(a["answer"] for a in answers)
    assert lines[3] == "cancelling"
    cancelled = json.loads(lines[4])
    rc = cancelled["request_counts"]
    assert cancelled["status"] == "cancelled" and rc["total"] == 200 and rc["completed"] + rc["failed"] == 200
    assert rc["failed"] > 0  # it was still running when cancelled
    assert lines[5:] == ["smollm2-135m-instruct"]
