"""bespokelabs-curator 0.1.31 runs a batch job, unchanged, against a real `runner serve`.

Curator's pins conflict with runner's (openai 2.x, pydantic 2.12, httpx 0.28), so it runs in its own
venv, .venv-curator, made from the client-only lock locks/curator.txt by scripts/setup.sh (which
does nothing when the venv is already up to date). The job (curator_job.py) asks for a pydantic
response_format on the simulated backend, which answers with schema-valid JSON. Curator uploads
bytes, so the SDK names the file "upload": runner takes any name for purpose batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .live import SIM_MODELS_YAML, runner_serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-curator"
JOB = Path(__file__).with_name("curator_job.py")


@pytest.fixture(scope="module")
def curator_python() -> Path:
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "VENV": str(VENV), "LOCK": "curator"}, timeout=1200)
    assert r.returncode == 0, f"setup.sh for {VENV.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    print(f"{VENV.name}: {r.stdout.strip().splitlines()[-1]} ({time.monotonic() - t0:.1f} s)")
    return VENV / "bin" / "python"


def test_curator_batch_job_with_response_format(curator_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "curator-out.json"
    with runner_serve(tmp_path / "srv", SIM_MODELS_YAML) as server:
        env = server.client_env()
        env.update({
            "CURATOR_CACHE_DIR": str(tmp_path / "curator-cache"),  # not the user's ~/.cache/curator
            "TELEMETRY_ENABLED": "false",  # curator's posthog client; the test machine is offline
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm would fetch its price list at import
            "CURATOR_DISABLE_RICH_DISPLAY": "1",
        })
        t0 = time.monotonic()
        r = subprocess.run([str(curator_python), str(JOB), "sim-chat", str(out)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        print(f"curator job took {time.monotonic() - t0:.1f} s")
        assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}\nserver: {server.tail()}"
        (batch,) = server.batches()
        upload = server.get(f"/v1/files/{batch['input_file_id']}").json()
        sent = {row["custom_id"]: row for row in server.jsonl(batch["input_file_id"])}
        written = {row["custom_id"]: row for row in server.jsonl(batch["output_file_id"])}
        errors = server.jsonl(batch["error_file_id"]) if batch["error_file_id"] else []

    assert upload["filename"] == "upload" and upload["purpose"] == "batch"  # bytes, as curator sends them
    assert batch["status"] == "completed" and batch["endpoint"] == "/v1/chat/completions"
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert errors == [] and set(written) == set(sent) == {"0", "1", "2"}
    for row in sent.values():  # the pydantic model reached runner as a json_schema response_format
        fmt = row["body"]["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["country", "capital"]

    result: dict[str, Any] = json.loads(out.read_text())
    assert result["batch_mode"] is True
    assert (result["total"], result["succeeded"], result["failed"]) == (3, 3, 0)
    # curator parsed each answer into the pydantic model: exactly the JSON runner wrote, row by row
    # (its custom_id is the row's index in the dataset)
    asked = ["France", "Italy", "Japan"]
    for i, row in enumerate(result["rows"]):
        body = written[str(i)]["response"]["body"]
        answer = json.loads(body["choices"][0]["message"]["content"])
        assert row == {"asked": asked[i], **answer}
        assert set(answer) == {"country", "capital"} and all(isinstance(v, str) for v in answer.values())
