"""Does vLLM's stat logging (disable_log_stats=False, which GET /metrics needs) cost throughput?

Two LLMs of one model in one process, one with stats off and one on, generate the same prompts in
turn (off, on, off, on, ...), so drift on a shared machine hits both alike. Prints output tok/s per
run and the medians. The default model is the tests' 2-layer Llama with dummy weights: its steps are
so cheap that any per-step bookkeeping shows most there (a worst case).

    .venv-vllm/bin/python benchmarks/bench_vllm_log_stats.py --prompts 64 --output-len 32 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="a model folder (default: the tests' tiny Llama, dummy weights)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "vllm"))
    from vllm_helpers import CHILD_ENV, TINY_ENGINE_ARGS, make_tiny_llama

    os.environ.update(CHILD_ENV)
    from vllm import LLM, SamplingParams

    engine_args = dict(TINY_ENGINE_ARGS)
    model = args.model
    if not model:
        model = str(make_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama"))
    else:
        engine_args.pop("load_format")
    llms = {flag: LLM(model=model, disable_log_stats=not flag, **engine_args) for flag in (False, True)}
    params = SamplingParams(max_tokens=args.output_len, ignore_eos=True, temperature=0)
    prompts = [f"Hello {i}, the quick brown fox" for i in range(args.prompts)]
    for llm in llms.values():
        llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up
    rates: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.repeats):
        for flag, llm in llms.items():
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            took = time.perf_counter() - t0
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            rates[flag].append(tokens / took)
            print(f"repeat {r} stats={'on ' if flag else 'off'} {tokens / took:8.1f} tok/s ({took:.2f} s)", flush=True)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median tok/s: stats off {off:.1f}, on {on:.1f} ({(on / off - 1) * 100:+.1f}%)")
    for flag, name in ((False, "off"), (True, "on")):
        print(f"range stats {name}: {min(rates[flag]):.1f}-{max(rates[flag]):.1f} tok/s")


if __name__ == "__main__":
    main()
