"""Loopback load test of the API (issue #6): N concurrent pollers on GET /v1/batches/{id} plus
concurrent uploads (each followed by a batch create) against a real `runner serve` for a bounded time.

    python benchmarks/load_api.py                       # 200 pollers + 4 uploaders, 60 s, engine off
    python benchmarks/load_api.py --seconds 10 --pollers 50 --engine   # engine on (simulated backend)

The server runs with RUNNER_RATE_LIMIT=0 (no 429s) on a temp data dir with a simulated-backend
models.yaml. A batch of --batch-lines lines is created first, so the pollers watch a batch that is
in_progress (and with --engine, actually running). Every non-2xx answer or transport error counts as
an error. Prints a table (requests, errors, p50/p95/p99 latency, req/s per kind) and writes JSON to
benchmarks/results/load-api-<date>.json (or --json PATH). Exit status 1 when any request failed.
Client and server share the machine, so on a small box the figures include the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, Server, machine, peak_rss_mb, table, write_result  # noqa: E402


def _batch_bytes(lines: int, tag: str) -> bytes:
    return b"".join(
        orjson.dumps({"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "sim", "messages": [{"role": "user", "content": f"hello {i}"}],
                               "max_tokens": 8}}) + b"\n"
        for i in range(lines)
    )


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.errors: dict[str, int] = {}

    def record(self, t0: float, status: int | str) -> None:
        self.lat.append(time.perf_counter() - t0)
        if not (isinstance(status, int) and 200 <= status < 300):
            self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def summary(self, name: str, seconds: float) -> dict[str, Any]:
        lat = sorted(self.lat)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        return {"kind": name, "requests": len(lat), "errors": sum(self.errors.values()),
                "error_statuses": self.errors, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                "max_ms": round(lat[-1] * 1000, 2) if lat else None, "req_per_s": round(len(lat) / seconds, 1)}


async def _request(client: httpx.AsyncClient, stats: Stats, method: str, url: str, **kw: Any) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        resp = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        stats.record(t0, type(exc).__name__)
        return None
    stats.record(t0, resp.status_code)
    return resp


async def _poller(client: httpx.AsyncClient, url: str, stop: float, interval: float, stats: Stats) -> None:
    while time.monotonic() < stop:
        await _request(client, stats, "GET", url)
        if interval:
            await asyncio.sleep(interval)


async def _uploader(client: httpx.AsyncClient, n: int, lines: int, stop: float, up: Stats, create: Stats) -> None:
    i = 0
    while time.monotonic() < stop:
        i += 1
        content = _batch_bytes(lines, f"u{n}-{i}")
        resp = await _request(client, up, "POST", "/v1/files",
                              files={"file": (f"load-{n}-{i}.jsonl", content, "application/jsonl")},
                              data={"purpose": "batch"})
        if resp is None or resp.status_code != 200:
            continue
        await _request(client, create, "POST", "/v1/batches",
                       json={"input_file_id": resp.json()["id"], "endpoint": "/v1/chat/completions",
                             "completion_window": "24h"})


async def run_load(base: str, *, pollers: int, uploaders: int, seconds: float, interval: float,
                   batch_lines: int, upload_lines: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=pollers + uploaders + 8, max_keepalive_connections=pollers + uploaders + 8)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        r = await client.post("/v1/files", files={"file": ("main.jsonl", _batch_bytes(batch_lines, "main"),
                                                            "application/jsonl")}, data={"purpose": "batch"})
        r.raise_for_status()
        r = await client.post("/v1/batches", json={"input_file_id": r.json()["id"],
                                                   "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        r.raise_for_status()
        batch_id = r.json()["id"]
        for _ in range(600):
            status = (await client.get(f"/v1/batches/{batch_id}")).json()["status"]
            if status != "validating":
                break
            await asyncio.sleep(0.05)
        poll, up, create = Stats(), Stats(), Stats()
        t0 = time.monotonic()
        stop = t0 + seconds
        tasks = [_poller(client, f"/v1/batches/{batch_id}", stop, interval, poll) for _ in range(pollers)]
        tasks += [_uploader(client, n, upload_lines, stop, up, create) for n in range(uploaders)]
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        final = (await client.get(f"/v1/batches/{batch_id}")).json()
    rows = [poll.summary("poll GET /v1/batches/{id}", elapsed), up.summary("upload POST /v1/files", elapsed),
            create.summary("create POST /v1/batches", elapsed)]
    every = Stats()
    for s in (poll, up, create):
        every.lat += s.lat
        for k, v in s.errors.items():
            every.errors[k] = every.errors.get(k, 0) + v
    rows.append(every.summary("all", elapsed))
    return {"rows": rows, "seconds": round(elapsed, 2), "batch_status_at_end": final["status"],
            "batch_request_counts": final["request_counts"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pollers", type=int, default=200)
    ap.add_argument("--uploaders", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--poll-interval", type=float, default=0.2, help="pause of each poller between requests")
    ap.add_argument("--batch-lines", type=int, default=2000, help="lines of the batch the pollers watch")
    ap.add_argument("--upload-lines", type=int, default=200, help="lines per uploaded file")
    ap.add_argument("--engine", action="store_true", help="run the engine (simulated backend) during the load")
    ap.add_argument("--json", type=Path, help="write the result here instead of benchmarks/results/")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="runner-load-") as tmp:
        models = Path(tmp) / "models.yaml"
        models.write_text(SIM_MODELS_YAML)
        server_args = [] if args.engine else ["--no-engine"]
        env = {"RUNNER_LOG_LEVEL": "warning", "RUNNER_BACKEND": "simulated"}
        with Server(Path(tmp) / "data", models, env=env, args=server_args) as server:
            server.wait_ready(engine=args.engine)
            result = asyncio.run(run_load(server.base, pollers=args.pollers, uploaders=args.uploaders,
                                          seconds=args.seconds, interval=args.poll_interval,
                                          batch_lines=args.batch_lines, upload_lines=args.upload_lines))
            result["api_peak_rss_mb"] = round(peak_rss_mb(server.proc.pid), 1)
    result["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(table(result["rows"], ["kind", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms", "req_per_s"]))
    print(f"batch at end: {result['batch_status_at_end']} {result['batch_request_counts']}; "
          f"API peak RSS {result['api_peak_rss_mb']} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps({"benchmark": "load-api", "machine": machine(), **result},
                                           option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    else:
        print(f"wrote {write_result('load-api', result)}")
    return 1 if result["rows"][-1]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
