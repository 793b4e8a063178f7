"""GET /metrics passes vLLM's own engine metrics on when a model runs on the vLLM backend (a real
`runner serve` with a tiny Llama, CUDA or CPU): the engine builds vLLM's LLM with
disable_log_stats=False and reports the `vllm:` families through the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_vllm_server import Server, _chat
from vllm_helpers import make_tiny_llama, skip_unless_vllm

skip_unless_vllm()
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, make_tiny_llama(tmp_path / "tiny-llama"))
    yield srv
    srv.stop()


def _samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = server.client.get("/metrics")
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_vllm_engine_metrics_appear_in_metrics(server: Server) -> None:
    n = 8
    batch_id = server.submit([_chat(i, max_tokens=8) for i in range(n)], "/v1/chat/completions")
    done = server.wait(batch_id, ("completed",))
    assert done["request_counts"] == {"total": n, "completed": n, "failed": 0}
    deadline = time.monotonic() + 15
    while True:  # the engine reports vLLM's figures every 5 s (engine/stats.py VLLM_REPORT_EVERY)
        samples = _samples(server)
        generated = sum(v for (name, _), v in samples.items() if name == "vllm:generation_tokens_total")
        if generated >= done["usage"]["output_tokens"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = {name for name, _ in samples}
    assert generated == done["usage"]["output_tokens"] > 0, sorted(n for n in names if n.startswith("vllm:"))
    prompt = sum(v for (name, _), v in samples.items() if name == "vllm:prompt_tokens_total")
    assert prompt == done["usage"]["input_tokens"] > 0
    assert any(name.startswith("vllm:time_to_first_token_seconds") for name in names)
    assert samples[("runner_lines_completed_total", (("model", "tiny-chat"),))] == n
    assert samples[("runner_model_loads_total", (("model", "tiny-chat"), ("result", "ok")))] == 1
