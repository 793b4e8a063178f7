"""Poll latency with slow uploaders connected (issue #14): what held connections cost other clients.

    python benchmarks/bench_slow_clients.py                     # 0 vs 200 uploaders, 3 repeats, 5 s each
    python benchmarks/bench_slow_clients.py --uploaders 0 200 600 --seconds 10 --repeat 5

One real `runner serve` (engine off; a batch created first so its status is what is polled). Each
run connects N "slow uploaders" on raw sockets: they send the headers of a 10 MB multipart upload and
its first bytes, then stall. The server is started with RUNNER_MAX_CONCURRENT_UPLOADS above N and a
long RUNNER_BODY_TIMEOUT, so every one of them is held for the whole run (the worst case; by default
uploads past 64 are refused at once). Meanwhile --pollers keep-alive clients GET /v1/batches/{id}
every --interval s. Prints p50/p99/max poll latency per uploader count (median and range over the
repeats) and writes benchmarks/results/slow-clients-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import SIM_MODELS_YAML, Server, peak_rss_mb, table, write_result  # noqa: E402
from _poller import poll_loop  # noqa: E402

BOUNDARY = "benchslowboundary"


def upload_head(port: int) -> bytes:
    first = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
             f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
             "Content-Type: application/jsonl\r\n\r\n{\"custom_id\": ").encode()
    return (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Content-Length: 10000000\r\n\r\n").encode() + first


def connect_uploaders(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(upload_head(port))
        socks.append(s)
    return socks


def still_held(socks: list[socket.socket]) -> int:
    """Uploaders the server has not answered (none should have been refused or timed out)."""
    held = 0
    for s in socks:
        s.setblocking(False)
        try:
            s.recv(1)  # an answer or EOF: the server let this one go
        except BlockingIOError:
            held += 1
        except OSError:
            pass
    return held


async def measure(port: int, path: str, pollers: int, interval: float, seconds: float) -> tuple[list[float], int]:
    stop = asyncio.Event()
    samples: list[tuple[float, float]] = []
    errors: list[int] = []
    tasks = [asyncio.create_task(poll_loop("127.0.0.1", port, [path], stop, samples, errors, interval,
                                           offset=i * interval / pollers)) for i in range(pollers)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return [lat for _, lat in samples], len(errors)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploaders", type=int, nargs="+", default=[0, 200])
    ap.add_argument("--pollers", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between one poller's GETs")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.uploaders}
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        models = Path(tmp) / "models.yaml"
        models.write_text(SIM_MODELS_YAML)
        cap = max(args.uploaders) + 16
        env = {"RUNNER_MAX_CONCURRENT_UPLOADS": str(cap), "RUNNER_BODY_TIMEOUT": "600",
               "RUNNER_MAX_CONNECTIONS": str(cap + 4 * args.pollers), "RUNNER_LOG_LEVEL": "warning"}
        with Server(Path(tmp) / "data", models, env=env, args=["--no-engine"]) as server:
            server.wait_ready(engine=False)
            line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}}
            fid = httpx.post(server.base + "/v1/files", data={"purpose": "batch"},
                             files={"file": ("in.jsonl", orjson.dumps(line) + b"\n")}).json()["id"]
            bid = httpx.post(server.base + "/v1/batches", json={"input_file_id": fid, "completion_window": "24h",
                                                                "endpoint": "/v1/chat/completions"}).json()["id"]
            for _ in range(args.repeat):
                for n in args.uploaders:  # interleaved, so drift on a shared box hits every count alike
                    socks = connect_uploaders(server.port, n)
                    time.sleep(0.3)
                    lats, errors = asyncio.run(measure(server.port, f"/v1/batches/{bid}", args.pollers,
                                                       args.interval, args.seconds))
                    held = still_held(socks)
                    for s in socks:
                        s.close()
                    time.sleep(0.3)
                    runs[n].append({"polls": len(lats), "errors": errors, "held": held,
                                    "p50_ms": pct(lats, 0.50), "p99_ms": pct(lats, 0.99), "max_ms": max(lats) * 1000})
                    print(f"  {n} uploaders ({held} held): p50 {runs[n][-1]['p50_ms']:.2f} ms  "
                          f"p99 {runs[n][-1]['p99_ms']:.2f} ms  errors {errors}", flush=True)
            rss = peak_rss_mb(server.proc.pid)
    rows = []
    for n, rs in runs.items():
        p99 = [r["p99_ms"] for r in rs]
        rows.append({"uploaders": n, "held": min(r["held"] for r in rs), "polls": sum(r["polls"] for r in rs),
                     "errors": sum(r["errors"] for r in rs),
                     "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                     "p99_ms": statistics.median(p99), "p99_min": min(p99), "p99_max": max(p99),
                     "max_ms": max(r["max_ms"] for r in rs)})
    print(table(rows, ["uploaders", "held", "polls", "errors", "p50_ms", "p99_ms", "p99_min", "p99_max", "max_ms"]))
    out = write_result("slow-clients", {"args": vars(args), "api_peak_rss_mb": rss, "rows": rows,
                                        "runs": {str(k): v for k, v in runs.items()}})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
