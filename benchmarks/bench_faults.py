"""Time to recover from each fault of #14, on a real server with the simulated backend.

    python benchmarks/bench_faults.py                  # every scenario, 3 repeats
    python benchmarks/bench_faults.py --only orphan_engine --repeat 5

Each fault's scenarios live in a `fault_<name>.py` module beside this file, which exposes
`SCENARIOS: dict[str, Callable[[Path], float]]`: the callable gets a fresh temporary directory,
starts what it needs (benchmarks/_harness.Server), injects its fault and returns the seconds from
the injection until the server has recovered by that scenario's own criterion (stated in its
docstring: e.g. "a new batch completes", "the damaged batch is failed and the others complete").
A scenario raises when the server does not recover within its own deadline; that is reported as a
failure, never as a time.

Prints one row per scenario (median, min, max of the repeats) and writes
benchmarks/results/faults-<date>.json.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import table, write_result  # noqa: E402


def scenarios() -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted(HERE.glob("fault_*.py")):
        module = importlib.import_module(path.stem)
        for name, fn in module.SCENARIOS.items():
            found[name] = (path.stem, fn)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="scenario names (default: all)")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for name, (module, fn) in scenarios().items():
        if args.only and name not in args.only:
            continue
        times: list[float] = []
        failures: list[str] = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
                try:
                    times.append(float(fn(Path(tmp))))
                except Exception as exc:  # a scenario that did not recover is a result, not a crash
                    traceback.print_exc()
                    failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        row: dict[str, Any] = {"scenario": name, "module": module, "runs": len(times), "failed": len(failures)}
        if times:
            row.update(median_s=round(statistics.median(times), 3), min_s=round(min(times), 3),
                       max_s=round(max(times), 3))
        row["times_s"] = [round(t, 3) for t in times]
        row["failures"] = failures
        rows.append(row)
        print(f"{name}: {row.get('median_s')} s ({len(failures)} failed)", flush=True)
    print(table(rows, ["scenario", "runs", "failed", "median_s", "min_s", "max_s"]))
    print(write_result("faults", {"repeat": args.repeat, "scenarios": rows}))


if __name__ == "__main__":
    main()
