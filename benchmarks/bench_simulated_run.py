"""Per-line cost of the simulated backend's _run (request body -> response body) on chat lines.

The simulated backend measures the pipeline's own ceiling, so its per-line work must stay small.
Usage: python benchmarks/bench_simulated_run.py [--lines 20000] [--repeats 5]
Prints the best of the repeats in CPU microseconds per line (process time: steady on a shared
machine), for plain chat lines and for lines with a json_schema response_format.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from runner.engine.backend import LineRequest
from runner.engine.simulated import SimulatedBackend
from runner.model_specs import ModelSpec

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age"], "additionalProperties": False}


def _requests(lines: int, extra: dict[str, Any]) -> list[LineRequest]:
    return [LineRequest(key=f"b:{i}", batch_id="b", custom_id=f"c{i}", endpoint="/v1/chat/completions",
                        body={"model": "m", "messages": [{"role": "user", "content": f"question number {i}"}],
                              "max_tokens": 64, "temperature": 0.7, **extra}, line=i + 1)
            for i in range(lines)]


def _best(backend: SimulatedBackend, reqs: list[LineRequest], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for r in reqs:
            backend._run(r)
        best = min(best, time.process_time() - t0)
    return best / len(reqs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    backend = SimulatedBackend(ModelSpec(id="m", backend="simulated", max_tokens=256))
    print(f"plain chat: {_best(backend, _requests(a.lines, {}), a.repeats):.1f} us/line")
    rf = {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}}
    try:
        print(f"json_schema chat: {_best(backend, _requests(a.lines, rf), a.repeats):.1f} us/line")
    except Exception as exc:  # noqa: BLE001 - before structured output the path did not exist
        print(f"json_schema chat: not available ({type(exc).__name__})")


if __name__ == "__main__":
    main()
