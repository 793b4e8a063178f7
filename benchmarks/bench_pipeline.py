"""Pipeline ceiling on the CPU: the simulated backend at full speed, so every second measured is
runner's own (upload, validation, feeding, writing, bookkeeping, HTTP), never the model's.

    python benchmarks/bench_pipeline.py                 # 5k and 50k-line chat files, 200 pollers
    python benchmarks/bench_pipeline.py --sizes 5000 --pollers 50

For each size: upload MB/s, lines/s from upload start to `completed`, time to first output row after
in_progress, peak RSS of the API and engine processes (is it flat in file size?), and GET
/v1/batches/{id} latency p50/p99 with N concurrent pollers during the run. Prints a table and writes
benchmarks/results/pipeline-cpu-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, Server, children, peak_rss_mb, table, write_result  # noqa: E402
from make_batch import parser as batch_parser  # noqa: E402
from make_batch import write_batch  # noqa: E402


async def _poll(client: httpx.AsyncClient, url: str, stop: asyncio.Event, lat: list[float], errs: list[int]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            r = await client.get(url)
            if r.status_code != 200:
                errs.append(r.status_code)
        except httpx.HTTPError:
            errs.append(0)
        lat.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)


async def run_one(server: Server, path: Path, lines: int, pollers: int) -> dict[str, Any]:
    size = path.stat().st_size
    async with httpx.AsyncClient(base_url=server.base, timeout=60,
                                 limits=httpx.Limits(max_connections=pollers + 10)) as client:
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            r = await client.post("/v1/files", files={"file": (path.name, f, "application/jsonl")},
                                  data={"purpose": "batch"})
        r.raise_for_status()
        upload_s = time.perf_counter() - t0
        r = await client.post("/v1/batches", json={"input_file_id": r.json()["id"],
                                                   "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        r.raise_for_status()
        batch_id = r.json()["id"]
        stop = asyncio.Event()
        lat: list[float] = []
        errs: list[int] = []
        tasks = [asyncio.create_task(_poll(client, f"/v1/batches/{batch_id}", stop, lat, errs))
                 for _ in range(pollers)]
        created_at = time.perf_counter()
        in_progress_at = first_row_at = None
        while True:
            b = (await client.get(f"/v1/batches/{batch_id}")).json()
            now = time.perf_counter()
            if in_progress_at is None and b["status"] != "validating":
                in_progress_at = now
            if first_row_at is None and b["request_counts"]["completed"] + b["request_counts"]["failed"] > 0:
                first_row_at = now
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            await asyncio.sleep(0.005)
        total_s = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks)
    lat.sort()
    engine = server.engine_pid()
    return {
        "lines": lines,
        "status": b["status"],
        "completed": b["request_counts"]["completed"],
        "file_mb": size / 1e6,
        "upload_mb_s": size / 1e6 / upload_s,
        "lines_per_s": lines / total_s,
        "end_to_end_s": total_s,
        # where the time went: upload, create -> in_progress (validation), in_progress -> completed
        "upload_s": upload_s,
        "validating_s": None if in_progress_at is None else in_progress_at - created_at,
        "running_s": None if in_progress_at is None else t0 + total_s - in_progress_at,
        "first_row_s": None if first_row_at is None or in_progress_at is None else first_row_at - in_progress_at,
        "poll_requests": len(lat),
        "poll_errors": len(errs),
        "poll_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "poll_p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else None,
        "poll_mean_ms": 1000 * statistics.fmean(lat) if lat else None,
        "api_peak_rss_mb": peak_rss_mb(server.proc.pid),
        "engine_peak_rss_mb": peak_rss_mb(engine) if engine else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,50000")
    ap.add_argument("--pollers", type=int, default=200)
    ap.add_argument("--out-name", default="pipeline-cpu")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        tmpd = Path(tmp)
        models = tmpd / "models.yaml"
        models.write_text(SIM_MODELS_YAML)
        for n in [int(x) for x in args.sizes.split(",")]:
            path = tmpd / f"chat-{n}.jsonl"
            write_batch(batch_parser().parse_args(["--lines", str(n), "--model", "sim", "--output-len", "16",
                                                   "-o", str(path)]))
            # A fresh server per size, so peak RSS belongs to that size alone.
            with Server(tmpd / f"data-{n}", models) as server:
                server.wait_ready()
                row = asyncio.run(run_one(server, path, n, args.pollers))
                row["engine_children"] = len(children(server.proc.pid))
            rows.append(row)
            print(f"  {n} lines: {row['lines_per_s']:.0f} lines/s", file=sys.stderr)
    if len(rows) >= 2 and rows[0]["engine_peak_rss_mb"] and rows[-1]["engine_peak_rss_mb"]:
        for key in ("api_peak_rss_mb", "engine_peak_rss_mb"):
            print(f"{key} ratio {rows[-1]['lines']}/{rows[0]['lines']}: {rows[-1][key] / rows[0][key]:.2f}")
    print(table(rows, ["lines", "status", "lines_per_s", "upload_s", "validating_s", "running_s", "first_row_s", "poll_p50_ms", "poll_p99_ms",
                       "poll_errors", "api_peak_rss_mb", "engine_peak_rss_mb"]))
    path = write_result(args.out_name, {"pollers": args.pollers, "runs": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
