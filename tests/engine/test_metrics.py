"""GET /metrics and the Batch's live `throughput`, on a real `runner serve` (API + engine child) with
the simulated backend, scraped with prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.store.stats import throughput

from .test_server import KEY, Server, _exactly_once, _jsonl, _wait

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

TOKEN = "scrape-token-for-tests"
# sim-slow: 16-token answers at 256 tokens/s in all, so 96 lines take ~6 s.
MODELS_YAML = """
models:
  - id: sim-slow
    backend: simulated
    max_tokens: 16
    engine_args: {tokens_per_second: 256, max_inflight: 8}
  - id: sim-fast
    backend: simulated
    max_tokens: 8
"""


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("RUNNER_METRICS_TOKEN", TOKEN)
    s = Server(tmp_path, MODELS_YAML)
    try:
        yield s
    finally:
        s.stop()


def _lines(model: str, n: int, prefix: str = "l") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": f"say {i}"}], "ignore_eos": True}}
            for i in range(n)]


def _submit(server: Server, lines: list[dict[str, Any]]) -> Any:
    f = server.client.files.create(file=_jsonl(lines), purpose="batch")
    return server.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")


def _scrape(server: Server, token: str = KEY) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(server.base + "/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_during_a_run_and_survive_an_engine_restart(server: Server) -> None:
    # Access: no key -> 401, a wrong token -> 401; the scrape token opens /metrics and nothing else.
    r = httpx.get(server.base + "/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = httpx.get(server.base + "/metrics", headers={"authorization": "Bearer nope"})
    assert r.status_code == 401
    r = httpx.get(server.base + "/v1/batches", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 401
    before = _scrape(server, TOKEN)
    assert _value(before, "runner_engine_up") == 1.0
    assert _value(before, "runner_engine_restarts_total") == 0.0

    ids = [f"l{i}" for i in range(96)]
    b = _submit(server, _lines("sim-slow", 96))
    _wait(server.client, b.id, ("in_progress",), timeout=30)
    first: dict[Any, float] = {}
    in_flight_seen = 0.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a scrape taken while lines are done, queued and in flight
        first = _scrape(server)
        in_flight_seen = max(in_flight_seen, _value(first, "runner_in_flight_lines", model="sim-slow"))
        if _value(first, "runner_lines_completed_total", model="sim-slow") > 0 and in_flight_seen > 0:
            break
        time.sleep(0.2)
    assert in_flight_seen > 0
    assert _value(first, "runner_batches", status="in_progress") == 1.0
    done1 = _value(first, "runner_lines_completed_total", model="sim-slow")
    assert 0 < done1 < 96
    assert _value(first, "runner_pending_lines", model="sim-slow") == 96 - done1
    time.sleep(1.5)
    second = _scrape(server)
    assert _value(second, "runner_lines_completed_total", model="sim-slow") > done1  # the counter moves
    assert (_value(second, "runner_output_tokens_total", model="sim-slow")
            > _value(first, "runner_output_tokens_total", model="sim-slow"))

    done = _wait(server.client, b.id, ("completed",), timeout=60)
    _exactly_once(server.client, done, ids)
    after = _scrape(server)
    assert _value(after, "runner_lines_completed_total", model="sim-slow") == 96
    assert _value(after, "runner_lines_failed_total", model="sim-slow") == 0
    assert _value(after, "runner_output_tokens_total", model="sim-slow") == done.usage.output_tokens > 0
    assert _value(after, "runner_prompt_tokens_total", model="sim-slow") == done.usage.input_tokens > 0
    assert _value(after, "runner_batches", status="completed") == 1.0
    assert _value(after, "runner_pending_lines", model="sim-slow") == 0
    assert _value(after, "runner_model_loads_total", model="sim-slow", result="ok") == 1.0
    assert _value(after, "runner_model_load_seconds_count", model="sim-slow") == 1.0

    # The engine dies: the restart is counted, and the counters (from durable rows) do not go back.
    pid = server.engine_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.engine_pid() in (None, pid):
        assert time.monotonic() < deadline, "engine not restarted"
        time.sleep(0.1)
    b2 = _submit(server, _lines("sim-fast", 20, "f"))
    _wait(server.client, b2.id, ("completed",), timeout=60)
    deadline = time.monotonic() + 10
    while True:  # the engine reports loads and in-flight lines once a second
        last = _scrape(server, TOKEN)
        if _value(last, "runner_model_loads_total", model="sim-fast", result="ok") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _value(last, "runner_engine_restarts_total") == 1.0
    assert _value(last, "runner_lines_completed_total", model="sim-slow") == 96
    assert _value(last, "runner_lines_completed_total", model="sim-fast") == 20  # a second model label
    assert _value(last, "runner_model_loads_total", model="sim-slow", result="ok") == 1.0
    assert _value(last, "runner_model_loads_total", model="sim-fast", result="ok") == 1.0
    assert _value(last, "runner_in_flight_lines", model="sim-fast") == 0
    assert not any(name.startswith("vllm:") for name, _ in last)  # no vLLM here, so none of its series


def test_throughput_while_in_progress_and_null_otherwise(server: Server) -> None:
    client = server.client
    b = _submit(server, _lines("sim-slow", 96))
    assert b.model_extra is not None and b.model_extra["throughput"] is None  # validating
    seen: list[tuple[float, dict[str, Any]]] = []
    listed: dict[str, Any] | None = None
    deadline = time.monotonic() + 60
    while True:
        cur = client.batches.retrieve(b.id)
        if cur.status == "completed":
            break
        assert time.monotonic() < deadline
        tp = cur.model_dump()["throughput"]  # the SDK keeps the extra field
        if cur.status == "in_progress" and tp is not None:
            seen.append((time.monotonic(), tp))
            if listed is None:
                page = client.batches.list(limit=5)
                listed = next(x for x in page.data if x.id == b.id).model_extra["throughput"]  # type: ignore[index]
        time.sleep(0.25)
    end = time.monotonic()
    assert len(seen) >= 4, seen
    assert listed is not None and listed["lines_per_second"] > 0
    for _, tp in seen:
        assert set(tp) == {"lines_per_second", "output_tokens_per_second", "eta_seconds"}
        assert tp["lines_per_second"] > 0 and tp["output_tokens_per_second"] > 0
        # 256 tokens/s of 16-token answers is 16 lines/s: measured over a window, near that
        assert 4 < tp["lines_per_second"] < 40, tp
        assert 50 < tp["output_tokens_per_second"] < 600, tp
    etas = [(at, tp["eta_seconds"]) for at, tp in seen]
    assert etas[-1][1] < etas[0][1]  # it comes down as the batch goes
    at0, eta0 = etas[0]
    assert 0.3 * (end - at0) - 1 <= eta0 <= 3 * (end - at0) + 1, (eta0, end - at0)  # plausible
    assert client.batches.retrieve(b.id).model_extra["throughput"] is None  # type: ignore[index]
    listed_done = next(x for x in client.batches.list().data if x.id == b.id)
    assert listed_done.model_extra["throughput"] is None  # type: ignore[index]


def test_throughput_rates_and_a_stall() -> None:
    assert throughput([], 10, 100.0) is None
    assert throughput([(99.0, 5, 50)], 10, 100.0) is None  # one sample measures nothing
    tp = throughput([(90.0, 0, 0), (95.0, 10, 100), (100.0, 20, 200)], 30, 100.0)
    assert tp == {"lines_per_second": 2.0, "output_tokens_per_second": 20.0, "eta_seconds": 15.0}
    # no sample for 20 s: the span runs to now (less the grace), so the rate falls and the ETA grows
    stalled = throughput([(90.0, 0, 0), (100.0, 20, 200)], 30, 120.0)
    assert stalled is not None and stalled["lines_per_second"] == 20 / 25 and stalled["eta_seconds"] == 37.5
    # nothing moved: zero rates and no ETA
    assert throughput([(90.0, 5, 5), (100.0, 5, 5)], 30, 100.0) == {
        "lines_per_second": 0.0, "output_tokens_per_second": 0.0, "eta_seconds": None}
    # samples older than the window are not used
    assert throughput([(10.0, 0, 0), (100.0, 20, 200)], 30, 100.0) is None
