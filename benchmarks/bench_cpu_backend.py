"""CPU transformers backend: batched throughput against one-request-at-a-time generate, same model.

    python benchmarks/bench_cpu_backend.py                         # SmolLM2-135M from models.yaml
    python benchmarks/bench_cpu_backend.py --prompts 16 --max-tokens 32 --threads 1

Runs the same chat prompts through HFBackend twice through the backend seam: (a) one line in
flight at a time, (b) all lines queued so the backend batches them. Greedy decoding with
ignore_eos, so both sides generate the same number of tokens. Model load is excluded. Prints a table
and writes benchmarks/results/cpu-backend-<date>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import table, write_result  # noqa: E402

from runner.engine.backend import Backend, LineRequest  # noqa: E402
from runner.model_specs import load_model_specs  # noqa: E402
from runner.settings import load_settings  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "Why is the sky blue?",
    "How do I reverse a list in Python?", "Write a haiku about rain.", "What is 12 times 12?",
    "Who wrote Hamlet?", "Explain photosynthesis briefly.",
]


def requests(n: int, model: str, max_tokens: int) -> list[LineRequest]:
    return [
        LineRequest(key=f"b:{i}", batch_id="b", custom_id=f"q{i}", endpoint="/v1/chat/completions",
                    body={"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                          "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
        for i in range(n)
    ]


def run(backend: Backend, reqs: list[LineRequest], window: int) -> dict[str, Any]:
    pending = list(reqs)
    inflight = 0
    out_tokens = in_tokens = 0
    t0 = time.perf_counter()
    while pending or inflight:
        while pending and inflight < window:
            backend.add(pending.pop(0))
            inflight += 1
        for res in backend.step():
            inflight -= 1
            out_tokens += res.usage.completion_tokens
            in_tokens += res.usage.prompt_tokens
    elapsed = time.perf_counter() - t0
    return {"lines": len(reqs), "window": window, "seconds": elapsed, "output_tokens": out_tokens,
            "output_tok_s": out_tokens / elapsed, "total_tok_s": (out_tokens + in_tokens) / elapsed,
            "lines_per_s": len(reqs) / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models.yaml")
    ap.add_argument("--model", default=None, help="model id (default: the first generate model)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    registry = load_model_specs(args.models)
    spec = registry.get(args.model) if args.model else next(s for s in registry.specs if s.task == "generate")
    assert spec is not None, f"no model {args.model}"
    settings = load_settings({"threads": args.threads})
    from runner.engine.hf_backend import HFBackend

    t0 = time.perf_counter()
    backend = HFBackend(spec, settings)
    load_s = time.perf_counter() - t0
    reqs = requests(args.prompts, spec.id, args.max_tokens)
    run(backend, reqs[:2], 1)  # warm-up
    single = run(backend, requests(args.prompts, spec.id, args.max_tokens), 1)
    single["mode"] = "one at a time"
    batched = run(backend, requests(args.prompts, spec.id, args.max_tokens), args.prompts)
    batched["mode"] = "batched"
    backend.close()
    rows = [single, batched]
    print(table(rows, ["mode", "lines", "window", "seconds", "output_tokens", "output_tok_s", "lines_per_s"]))
    speedup = batched["output_tok_s"] / single["output_tok_s"]
    print(f"batched / one-at-a-time: {speedup:.2f}x  (model load {load_s:.1f} s, {args.threads} thread(s))")
    path = write_result("cpu-backend", {"model": spec.id, "path": spec.path, "threads": args.threads,
                                        "max_tokens": args.max_tokens, "load_s": load_s, "speedup": speedup,
                                        "runs": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
