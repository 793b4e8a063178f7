"""The engine's part of GET /metrics: what only this process knows, handed to the store.

The API process serves /metrics; it cannot see the engine's memory. The writer thread (the engine's
only database writer) calls EngineReporter.tick() on its rounds; at most once every REPORT_EVERY
seconds (vLLM's text every VLLM_REPORT_EVERY: writing it out took ~7 ms, a cost a 2-core box pays
out of vLLM's own kernels, and a Prometheus scrape comes every 15 s or more) it sends the Source:
- the lines in flight per model (the loaded models' windows), when they changed;
- the model loads finished since the last tick (model, ok, seconds, when);
- vLLM's own metrics (the `vllm:` families of prometheus_client's registry in this process, which
  vLLM's PrometheusStatLogger fills when the LLM runs with disable_log_stats=False), as Prometheus
  text, when they changed.
Everything else /metrics shows is counted from durable rows by the API (store/stats.py).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from runner.engine.messages import EngineState

REPORT_EVERY = 1.0
VLLM_REPORT_EVERY = 5.0


def vllm_metrics_text() -> str:
    """The `vllm:` metric families of this process's registry as Prometheus text ("" without vLLM)."""
    if "vllm" not in sys.modules:
        return ""  # never import vLLM (or touch the registry) for the other backends
    from prometheus_client import REGISTRY, generate_latest

    def collectors() -> list[Any]:
        # vLLM's collectors only: REGISTRY.collect() would also run the process and GC collectors
        # (reads of /proc) only to drop their output; the whole registry where that map is missing
        names = getattr(REGISTRY, "_collector_to_names", None)
        if not isinstance(names, dict):
            return [REGISTRY]
        return [c for c, n in list(names.items()) if any(x.startswith("vllm:") for x in n)]

    class _VllmOnly:
        def collect(self) -> list[Any]:
            return [m for c in collectors() for m in c.collect() if m.name.startswith("vllm:")]

    return generate_latest(_VllmOnly()).decode()  # type: ignore[arg-type]


class EngineReporter:
    """Throttled, change-only reports; the first tick always writes, so a new engine clears the last
    one's in-flight figures."""

    def __init__(self, state: EngineState) -> None:
        self.state = state
        self._next = 0.0
        self._next_vllm = 0.0
        self._sent: dict[str, str] = {}

    def tick(self, source: Any, *, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + REPORT_EVERY
        loads = self.state.take_loads()
        if loads:
            source.record_loads(loads)
        in_flight = {m: w.used for m, w in sorted(list(self.state.windows.items()))}
        reports = [("in_flight", orjson.dumps(in_flight).decode())]
        if now >= self._next_vllm or force:
            self._next_vllm = now + VLLM_REPORT_EVERY
            reports.append(("vllm", vllm_metrics_text()))
        for key, value in reports:
            if self._sent.get(key) != value:
                source.report(key, value)
                self._sent[key] = value
