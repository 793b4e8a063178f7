"""Fuzzing (issue #6): schemathesis against a live `runner serve --no-engine`, driven by the server's
own GET /openapi.json. Checks: no 5xx, every response (status, content type, headers, body) matches
the schema, schema-violating requests are rejected, deleted objects stay gone, created ones are
retrievable, auth is enforced. Every request and response is recorded in a HAR file and counted.

CI runs a bounded pass (RELIABILITY_FUZZ_EXAMPLES, default 25 examples per operation, well under a
minute). The long run, thousands of requests (about 10-15 minutes on 2 cores):

    RELIABILITY_FUZZ_EXAMPLES=1000 RELIABILITY_FUZZ_SECONDS=900 \\
        pytest tests/reliability/test_fuzz.py -s -p no:cacheprovider

or by hand against any server started with RUNNER_API_KEYS=fuzz-key RUNNER_RATE_LIMIT=0:

    st run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer fuzz-key" --workers 1 \\
        --checks all --exclude-checks positive_data_acceptance --max-examples 1000 \\
        --report har --report-har-path fuzz.har

`positive_data_acceptance` is left out on purpose: a schema-valid but unknown id answers 404 and an
unknown `after` cursor 400, which the schema cannot express. One worker: schemathesis' coverage
phase trips over a thread-safety bug in hypothesis' lambda introspection with two.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "25"))
SECONDS = int(os.environ.get("RELIABILITY_FUZZ_SECONDS", "240"))
KEY = "fuzz-key"


@pytest.mark.slow
def test_openapi_document_is_served(live_server: Callable[..., Any]) -> None:
    server = live_server(env={"RUNNER_API_KEYS": KEY})
    resp = httpx.get(server.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert ops >= {("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"),
                   ("DELETE", "/v1/files/{file_id}"), ("GET", "/v1/files/{file_id}/content"),
                   ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
                   ("POST", "/v1/batches/{batch_id}/cancel"), ("DELETE", "/v1/batches/{batch_id}"),
                   ("GET", "/v1/model-config"), ("GET", "/v1/models"), ("GET", "/health")}
    assert httpx.get(server.url + "/openapi.json").status_code == 401


@pytest.mark.slow
def test_schemathesis_live(live_server: Callable[..., Any], tmp_path: Path) -> None:
    server = live_server(env={"RUNNER_API_KEYS": KEY})
    har = tmp_path / "fuzz.har"
    cmd = [
        sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "run", f"{server.url}/openapi.json",
        "-H", f"Authorization: Bearer {KEY}",
        "--workers", "1",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(EXAMPLES),
        "--max-failures", "20",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--no-color",
        "--report", "har", "--report-har-path", str(har),
    ]
    if "RELIABILITY_FUZZ_SEED" in os.environ:
        cmd += ["--seed", os.environ["RELIABILITY_FUZZ_SEED"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60, cwd=tmp_path)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = collections.Counter(e["response"]["status"] for e in entries)
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    print(f"\nfuzz: {len(entries)} requests, {server_errors} 5xx, statuses {dict(sorted(statuses.items()))}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert server_errors == 0
    assert len(entries) >= 10 * EXAMPLES
    # the server is still healthy and consistent afterwards
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert c.get("/health").status_code == 200
        files = c.get("/v1/files").json()["data"]
        for f in files[:200]:
            assert len(c.get(f"/v1/files/{f['id']}/content").content) == f["bytes"]
        assert c.get("/v1/batches?limit=100").status_code == 200
