"""GET /metrics: Prometheus text, written with prometheus_client.

Each scrape reads the store (a few aggregate queries, off the event loop) and builds the families
afresh: the counters are sums of durable rows (the batches' checkpointed counts, model_loads), so
they only go up, across engine restarts too, and the API process keeps no counts of its own. What
only the engine knows right now (lines in flight, vLLM's own `vllm:` metrics) comes from the
engine_report table the engine's writer keeps (engine/stats.py). Any API key may scrape (the figures
are server-wide, labelled by model only), or RUNNER_METRICS_TOKEN as a bearer token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runner.store.transitions import ALLOWED

logger = logging.getLogger(__name__)

LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _Families:
    """A collector over families built beforehand (generate_latest wants something with collect())."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def families(snap: dict[str, Any], engine: dict[str, Any] | None) -> list[Metric]:
    """The metric families of one store snapshot (StatsStore.snapshot) and the supervisor's status."""
    out: list[Metric] = []
    batches = GaugeMetricFamily("runner_batches", "Batches by status.", labels=["status"])
    for status in ALLOWED:
        batches.add_metric([status], snap["statuses"].get(status, 0))
    out.append(batches)

    models = snap["models"]
    for name, column, doc in (
        ("runner_lines_completed", "completed", "Lines answered with status 200, per model."),
        ("runner_lines_failed", "failed", "Lines answered with an error row, per model."),
        ("runner_prompt_tokens", "input_tokens", "Prompt (input) tokens of answered lines, per model."),
        ("runner_output_tokens", "output_tokens", "Output tokens of answered lines, per model."),
    ):
        c = CounterMetricFamily(name, doc, labels=["model"])
        for m in models:
            c.add_metric([m["model"]], int(m[column] or 0))
        out.append(c)

    alive = bool(engine and engine.get("alive"))
    in_flight: dict[str, int] = snap["in_flight"] if alive else {}  # a dead engine's figures are stale
    pending = GaugeMetricFamily("runner_pending_lines", "Lines of running batches without a row yet (queued or "
                                "in flight), per model.", labels=["model"])
    for m in models:
        pending.add_metric([m["model"]], int(m["pending"] or 0))
    out.append(pending)
    flying = GaugeMetricFamily("runner_in_flight_lines", "Lines in the engine's in-flight window, per loaded model.",
                               labels=["model"])
    for model, n in sorted(in_flight.items()):
        flying.add_metric([model], int(n))
    out.append(flying)

    out.append(GaugeMetricFamily("runner_engine_up", "1 while the engine process runs.", value=int(alive)))
    out.append(CounterMetricFamily("runner_engine_restarts", "Engine process restarts since the server started.",
                                   value=int((engine or {}).get("restarts") or 0)))

    loads = CounterMetricFamily("runner_model_loads", "Model loads the engine finished, by result.",
                                labels=["model", "result"])
    seconds = HistogramMetricFamily("runner_model_load_seconds", "Seconds each successful model load took.",
                                    labels=["model"])
    by_model: dict[str, list[float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for model, ok, secs in snap["loads"]:
        key = (model, "ok" if ok else "failed")
        counts[key] = counts.get(key, 0) + 1
        if ok:
            by_model.setdefault(model, []).append(secs)
    for (model, result), n in sorted(counts.items()):
        loads.add_metric([model, result], n)
    for model, values in sorted(by_model.items()):
        buckets = [(repr(le), sum(1 for v in values if v <= le)) for le in LOAD_BUCKETS]
        seconds.add_metric([model], [*buckets, ("+Inf", len(values))], sum_value=sum(values))
    out += [loads, seconds]
    out += list(_vllm_families(snap["vllm"]))
    return out


def _vllm_families(text: str) -> Iterable[Metric]:
    """vLLM's families as its engine exported them (prometheus text), passed through unchanged."""
    if not text:
        return []
    try:
        return [f for f in text_string_to_metric_families(text) if f.name.startswith("vllm:")]
    except ValueError:
        logger.warning("vLLM's metrics from the engine did not parse; left out of /metrics")
        return []


def render(snap: dict[str, Any], engine: dict[str, Any] | None) -> bytes:
    return generate_latest(_Families(families(snap, engine)))  # type: ignore[arg-type]


async def metrics(request: Request) -> Response:
    svc = request.app.state.services
    snap = await run_in_threadpool(svc.stats.snapshot)
    status = getattr(svc, "engine_status", None)  # set by the engine supervisor (absent with --no-engine)
    body = render(snap, status() if status is not None else None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
