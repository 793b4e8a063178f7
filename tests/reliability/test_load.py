"""Bounded load (issue #6): benchmarks/load_api.py with 50 pollers and 2 uploaders for 5 s against a
real server; zero errors. The full run (200 pollers, 60 s) is `python benchmarks/load_api.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_load_small(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load_api.py"), "--pollers", "50", "--uploaders", "2",
         "--seconds", "5", "--batch-lines", "500", "--upload-lines", "50", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = orjson.loads(out.read_bytes())
    rows = {r["kind"]: r for r in result["rows"]}
    assert rows["all"]["errors"] == 0
    assert rows["poll GET /v1/batches/{id}"]["requests"] >= 50
    assert rows["upload POST /v1/files"]["requests"] >= 1
    assert rows["all"]["p99_ms"] is not None
