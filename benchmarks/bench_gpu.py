"""GPU comparison, one command: runner against raw vLLM and `vllm run-batch`, same model, same
prompts, same engine arguments, model load excluded.

    python benchmarks/bench_gpu.py --model /path/to/model --prompts 2000 --input-len 1024 \
        --output-len 512 --engine-args '{"max_model_len": 4096, "gpu_memory_utilization": 0.9}'
    python benchmarks/bench_gpu.py --model /tmp/tiny --engine-args '{"load_format": "dummy"}' --prompts 2000

Sides, each in its own process, one after another (they cannot share the GPU):
  raw       `LLM.generate` / `LLM.chat` on all prompts at once (what `vllm bench throughput` times)
  run-batch `vllm run-batch -i chat.jsonl -o out.jsonl`; its load time is taken out by timing a
            1-line run too (processing = t(N lines) - t(1 line))
  runner    `runner serve` with backend vllm, engine preloaded by a 1-line warm-up batch, then
            upload -> create -> poll until completed over HTTP
Workloads: `chat` (all three sides; run-batch 0.26 serves no /v1/completions) and `ids`
(token-id completions, raw vs runner: the exact comparison). Every request pins its length with
max_tokens + ignore_eos, temperature 1, top_p 1. Reports requests/s, output and total tokens/s, time
to first output row, peak host RSS of each side's process tree, and the ratios runner/raw and
runner/run-batch. Writes benchmarks/results/<device>-<date>.json with versions and arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, Server, table  # noqa: E402

RAW_SCRIPT = r"""
import json, sys, time
from vllm import LLM, SamplingParams
cfg = json.loads(sys.argv[1])
llm = LLM(model=cfg["model"], **cfg["engine_args"])
reqs = [json.loads(l) for l in open(cfg["input"])]
params = [SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=r["body"]["max_tokens"])
          for r in reqs]
t0 = time.perf_counter()
if cfg["workload"] == "ids":
    outs = llm.generate([{"prompt_token_ids": r["body"]["prompt"]} for r in reqs], params, use_tqdm=False)
else:
    outs = llm.chat([r["body"]["messages"] for r in reqs], params, use_tqdm=False)
elapsed = time.perf_counter() - t0
print("RESULT " + json.dumps({"seconds": elapsed,
      "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
      "output_tokens": sum(len(c.token_ids) for o in outs for c in o.outputs)}))
"""


class TreeRss:
    """Peak resident memory of a process and all its descendants, sampled every 0.25 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _tree(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for t in os.listdir(f"/proc/{p}/task"):
                    todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
            except OSError:
                pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            total = 0
            for p in self._tree():
                try:
                    for line in Path(f"/proc/{p}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    pass
            self.peak_mb = max(self.peak_mb, total / 1024)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak_mb


def make_workload(kind: str, n: int, in_len: int, out_len: int, vocab: int, model: str, path: Path) -> None:
    rng = random.Random(0)
    words = "alpha beta gamma delta river stone light cloud music garden ocean city story".split()
    with open(path, "w") as f:
        for i in range(n):
            if kind == "ids":
                body: dict[str, Any] = {"model": model, "prompt": [rng.randrange(10, vocab) for _ in range(in_len)]}
                url = "/v1/completions"
            else:
                text = " ".join(rng.choice(words) for _ in range(in_len))
                body = {"model": model, "messages": [{"role": "user", "content": text}]}
                url = "/v1/chat/completions"
            body.update(max_tokens=out_len, temperature=1.0, top_p=1.0, ignore_eos=True)
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}) + "\n")


def run_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", RAW_SCRIPT, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[7:])
    r["peak_rss_mb"] = peak
    r["first_row_s"] = r["seconds"]  # LLM.generate returns everything at the end
    return r


def run_batch_cli(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    def once(inp: Path) -> tuple[float, float]:
        out = tmp / f"rb-{inp.stem}.out.jsonl"
        cmd = ["vllm", "run-batch", "-i", str(inp), "-o", str(out), "--model", cfg["model"]]
        for k, v in cfg["engine_args"].items():
            flag = "--" + k.replace("_", "-")
            cmd += [flag] if v is True else [] if v is False else [flag, str(v)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rss = TreeRss(proc.pid)
        if proc.wait() != 0:
            raise RuntimeError(f"vllm run-batch failed: {' '.join(cmd)}")
        return time.perf_counter() - t0, rss.stop()

    one = tmp / "one.jsonl"
    one.write_text(Path(cfg["input"]).read_text().splitlines()[0] + "\n")
    t1, _ = once(one)
    tn, peak = once(Path(cfg["input"]))
    rows = [json.loads(x) for x in (tmp / f"rb-{Path(cfg['input']).stem}.out.jsonl").read_text().splitlines()]
    usage = [r["response"]["body"]["usage"] for r in rows if r.get("response") and r["response"]["status_code"] == 200]
    return {"seconds": tn - t1, "load_seconds_estimate": t1, "peak_rss_mb": peak, "first_row_s": tn - t1,
            "prompt_tokens": sum(u["prompt_tokens"] for u in usage),
            "output_tokens": sum(u["completion_tokens"] for u in usage)}


def run_runner(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import httpx

    models = tmp / "models.yaml"
    task_model = {"id": "bench", "path": cfg["model"], "backend": "vllm", "task": "generate",
                  "max_tokens": 100000, "engine_args": cfg["engine_args"]}
    models.write_text(json.dumps({"models": [task_model]}))  # JSON is YAML
    inp = Path(cfg["input"])
    rows = [json.loads(x) for x in inp.read_text().splitlines()]
    for r in rows:
        r["body"]["model"] = "bench"
    inp2 = tmp / "runner-input.jsonl"
    inp2.write_text("".join(json.dumps(r) + "\n" for r in rows))
    warm = tmp / "runner-warm.jsonl"
    warm.write_text(json.dumps(rows[0]) + "\n")
    with Server(tmp / "runner-data", models) as server:
        server.wait_ready(timeout=60)
        rss = TreeRss(server.proc.pid)
        c = httpx.Client(base_url=server.base, timeout=120)

        def batch(path: Path) -> tuple[float, float | None, dict[str, Any]]:
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                fid = c.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "batch"}).json()["id"]
            b = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": rows[0]["url"],
                                            "completion_window": "24h"}).json()
            first = None
            while b["status"] not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.05)
                b = c.get(f"/v1/batches/{b['id']}").json()
                if first is None and b["request_counts"]["completed"] > 0:
                    first = time.perf_counter() - t0
            return time.perf_counter() - t0, first, b

        batch(warm)  # loads the model: excluded from the timing, as for the other sides
        seconds, first, b = batch(inp2)
        peak = rss.stop()
    return {"seconds": seconds, "first_row_s": first, "peak_rss_mb": peak, "status": b["status"],
            "prompt_tokens": b["usage"]["input_tokens"], "output_tokens": b["usage"]["output_tokens"]}


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mod in ("vllm", "torch", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # report, don't fail: a missing side is skipped
            out[mod] = f"unavailable: {exc}"
    try:
        out["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        out["gpu"] = "unknown"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=500, help="token-id range for the ids workload")
    ap.add_argument("--engine-args", default="{}", help="JSON engine args, the same for every side")
    ap.add_argument("--workloads", default="chat,ids")
    ap.add_argument("--sides", default="raw,run-batch,runner")
    ap.add_argument("--label", default="", help="name for the results file (default: the GPU name)")
    args = ap.parse_args()
    engine_args = json.loads(args.engine_args)
    sides = args.sides.split(",")
    info = versions()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-gpu-bench-") as t:
        tmp = Path(t)
        for wl in args.workloads.split(","):
            inp = tmp / f"{wl}.jsonl"
            make_workload(wl, args.prompts, args.input_len, args.output_len, args.vocab, "bench", inp)
            cfg = {"model": args.model, "engine_args": engine_args, "input": str(inp), "workload": wl}
            for side in sides:
                if side == "run-batch" and wl == "ids":
                    continue  # run-batch 0.26 has no /v1/completions
                print(f"running {side} on {wl} ...", file=sys.stderr, flush=True)
                try:
                    if side == "raw":
                        r = run_raw(cfg)
                    elif side == "run-batch":
                        r = run_batch_cli(cfg, tmp)
                    else:
                        r = run_runner(cfg, tmp)
                except Exception as exc:
                    r = {"error": str(exc)}
                r.update(side=side, workload=wl, requests=args.prompts)
                if "seconds" in r and r["seconds"] > 0:
                    r["req_s"] = args.prompts / r["seconds"]
                    r["output_tok_s"] = r["output_tokens"] / r["seconds"]
                    r["total_tok_s"] = (r["output_tokens"] + r["prompt_tokens"]) / r["seconds"]
                results.append(r)
    ratios: dict[str, float] = {}
    for wl in args.workloads.split(","):
        by = {r["side"]: r for r in results if r["workload"] == wl and "output_tok_s" in r}
        for base in ("raw", "run-batch"):
            if "runner" in by and base in by:
                ratios[f"{wl}: runner/{base} output tok/s"] = by["runner"]["output_tok_s"] / by[base]["output_tok_s"]
    print(table(results, ["workload", "side", "req_s", "output_tok_s", "total_tok_s", "first_row_s", "peak_rss_mb"]))
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    label = args.label or (info.get("gpu", "gpu").split(",")[0].strip().replace(" ", "-") or "gpu")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{label}-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps({"benchmark": "gpu-comparison", "versions": info, "args": vars(args),
                                "engine_args": engine_args, "results": results, "ratios": ratios}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
