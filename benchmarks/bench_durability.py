"""What durable writes cost (#14 fault 9): SQLite synchronous=NORMAL (before) vs FULL (now).

    python benchmarks/bench_durability.py                 # 40 ops of each kind, 3 runs per mode
    python benchmarks/bench_durability.py --ops 100 --repeat 5 --dir /mnt/data

A `runner serve --no-engine` per run, with every store connection switched to the mode under test
(a wrapper sets the pragma after the store's own: the server itself only runs FULL). Sequential
requests from one client, each timed from send to answer: an upload of a 10-line batch file
(data fsync, rename, directory fsync, then the row commit) and a batch create (one commit). Runs
alternate between the modes, so a slow spell of a shared disk hits both. Reports, per mode and
kind, the median of each run's median latency, and the range over the runs. Where the data dir
lives matters (an fsync on tmpfs is free): --dir picks it, and the filesystem is recorded.
Writes benchmarks/results/durability-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, free_port, table, write_result  # noqa: E402

WRAPPER = """
import sys
import runner.store.db as db
mode = sys.argv.pop(1)
_connection = db.Database.connection
_seen = set()
def connection(self):
    conn = _connection(self)
    if id(conn) not in _seen:
        _seen.add(id(conn))
        conn.execute(f"PRAGMA synchronous={mode}")
    return conn
db.Database.connection = connection
from runner.cli import main
main()
"""


def _lines(n: int) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "sim-chat", "messages": [{"role": "user", "content": f"hi {i}"}]}})
                    + b"\n" for i in range(n))


def run_once(mode: str, ops: int, where: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=where, prefix="durability-") as tmp:
        models = Path(tmp) / "models.yaml"
        models.write_text(SIM_MODELS_YAML)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, mode, "serve", "--no-engine", "--port", str(port), "--data-dir",
             str(Path(tmp) / "data"), "--models", str(models)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUNNER_RATE_LIMIT": "0", "RUNNER_LOG_LEVEL": "warning"})
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            body = _lines(10)
            uploads: list[float] = []
            creates: list[float] = []
            with httpx.Client(base_url=base, timeout=30) as c:
                for _ in range(3):  # warm up
                    c.post("/v1/files", files={"file": ("in.jsonl", body)}, data={"purpose": "batch"})
                for _ in range(ops):
                    t0 = time.perf_counter()
                    r = c.post("/v1/files", files={"file": ("in.jsonl", body)}, data={"purpose": "batch"})
                    uploads.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    fid = r.json()["id"]
                    t0 = time.perf_counter()
                    r = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"})
                    creates.append(time.perf_counter() - t0)
                    r.raise_for_status()
            return {"upload_ms": statistics.median(uploads) * 1000, "create_ms": statistics.median(creates) * 1000}
        finally:
            proc.terminate()
            proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"NORMAL": [], "FULL": []}
    for _ in range(args.repeat):
        for mode in runs:
            runs[mode].append(run_once(mode, args.ops, args.dir))
    rows: list[dict[str, Any]] = []
    for mode, results in runs.items():
        for kind in ("upload_ms", "create_ms"):
            vals = [r[kind] for r in results]
            rows.append({"mode": mode, "op": kind[:-3], "median_ms": round(statistics.median(vals), 2),
                         "min_ms": round(min(vals), 2), "max_ms": round(max(vals), 2)})
    fs = subprocess.run(["df", "-T", str(args.dir)], capture_output=True, text=True).stdout.splitlines()[-1:]
    print(table(rows, ["mode", "op", "median_ms", "min_ms", "max_ms"]))
    print(write_result("durability", {"ops": args.ops, "repeat": args.repeat, "filesystem": fs, "rows": rows}))


if __name__ == "__main__":
    main()
