"""What an idle `runner serve` costs in CPU: the API process and the engine process, model loaded,
no batch running (#16: on a small CPU box every cycle runner spends is one vLLM's kernels lose, and a
team's GPU server idles most of the day).

    .venv/bin/python benchmarks/bench_idle.py                      # this checkout, 3 x 20 s
    .venv/bin/python benchmarks/bench_idle.py --baseline 9ab2530   # side by side with an older commit

Each side is a real `runner serve` on the simulated model (its load is instant and it does nothing
between batches, so every cycle measured is runner's own). A side starts, runs one 3-line batch (the
model loads), settles for 3 s, then the CPU seconds of each process are read from /proc before and
after --seconds of idling. --baseline REV runs the same on `git archive REV` unpacked in a temp dir.
Sides take turns in each repeat. Prints CPU seconds per minute, median [range], and writes
benchmarks/results/idle-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, Server, cpu_seconds, process_name, table, tree_pids, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev`, unpacked (no worktree: this checkout's state is left alone)."""
    data = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def one(tree: Path, tmp: Path, name: str, seconds: float) -> dict[str, float]:
    models = tmp / f"models-{name}.yaml"
    models.write_text(SIM_MODELS_YAML)
    with Server(tmp / f"data-{name}", models, cwd=tree) as server:
        server.wait_ready(timeout=60)
        with httpx.Client(base_url=server.base, timeout=30) as c:
            line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}}
            data = b"".join(json.dumps({**line, "custom_id": str(i)}).encode() + b"\n" for i in range(3))
            fid = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
            b = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}).json()
            while b["status"] not in ("completed", "failed"):
                time.sleep(0.05)
                b = c.get(f"/v1/batches/{b['id']}").json()
        time.sleep(3)
        pids = tree_pids(server.proc.pid)
        roles = {p: "engine" if " runner engine" in process_name(p) else "api" if p == server.proc.pid else None
                 for p in pids}
        before = cpu_seconds(pids)
        time.sleep(seconds)
        after = cpu_seconds(pids)
    out = {"api": 0.0, "engine": 0.0}
    for pid, cpu in after.items():
        role = roles[pid]
        if role is not None:
            out[role] += (cpu - before.get(pid, 0.0)) * 60.0 / seconds
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="idle time measured per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="", help="a git revision to measure beside this checkout")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-idle-bench-") as t:
        tmp = Path(t)
        sides = {"this": REPO}
        if args.baseline:
            sides[args.baseline] = checkout(args.baseline, tmp / "baseline")
        for rep in range(args.repeats):
            for name, tree in sides.items():
                cpu = one(tree, tmp, f"{name}-{rep}", args.seconds)
                runs.append({"side": name, "repeat": rep, **cpu})
                print(f"{name} repeat {rep}: api {cpu['api']:.2f}, engine {cpu['engine']:.2f} cpu-s/min",
                      file=sys.stderr, flush=True)
    rows = []
    for name in sides:
        row: dict[str, Any] = {"side": name}
        for role in ("api", "engine"):
            vals = [r[role] for r in runs if r["side"] == name]
            row[f"{role} cpu-s/min"] = statistics.median(vals)
            row[f"{role} range"] = f"{min(vals):.2f}-{max(vals):.2f}"
        rows.append(row)
    print(table(rows, ["side", "api cpu-s/min", "api range", "engine cpu-s/min", "engine range"]))
    path = write_result("idle", {"args": vars(args), "summary": rows, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
