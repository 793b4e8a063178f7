"""SimulatedBackend at the seam: determinism, shapes, errors, abort and its speed setting."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runner.engine.backend import LineRequest
from runner.engine.factory import make_backend, resolve_backend
from runner.engine.responses_api import ResponsesAdapter
from runner.engine.simulated import SimulatedBackend
from runner.engine.window import Window
from runner.errors import LineError
from runner.model_specs import ModelSpec
from runner.settings import Settings


def _req(key: str, body: dict[str, Any], endpoint: str = "/v1/chat/completions") -> LineRequest:
    return LineRequest(key=key, batch_id="b", custom_id=key, endpoint=endpoint, body=body)


def _chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def _run(backend: SimulatedBackend, *reqs: LineRequest) -> dict[str, Any]:
    for r in reqs:
        backend.add(r)
    out = {}
    while backend.has_unfinished():
        for res in backend.step():
            out[res.key] = res
    return out


def test_deterministic_outputs_and_usage() -> None:
    a = _run(SimulatedBackend(ModelSpec(id="m", backend="simulated")), _req("k1", _chat(seed=3)))["k1"]
    b = _run(SimulatedBackend(ModelSpec(id="m", backend="simulated")), _req("k1", _chat(seed=3)))["k1"]
    assert a.body["choices"] == b.body["choices"] and a.body["id"] == b.body["id"]
    u = a.body["usage"]
    assert a.usage.prompt_tokens == u["prompt_tokens"] and a.usage.completion_tokens == u["completion_tokens"]
    other = _run(SimulatedBackend(ModelSpec(id="m", backend="simulated")), _req("k1", _chat(seed=4)))["k1"]
    assert other.body["choices"][0]["message"]["content"] != a.body["choices"][0]["message"]["content"]


def test_max_tokens_caps_and_finish_reason() -> None:
    spec = ModelSpec(id="m", backend="simulated", max_tokens=3)
    res = _run(SimulatedBackend(spec), _req("k", _chat()))["k"]
    choice = res.body["choices"][0]
    assert res.usage.completion_tokens <= 3 and choice["finish_reason"] in ("length", "stop")
    res = _run(SimulatedBackend(spec), _req("k", _chat(max_completion_tokens=1, n=2)))["k"]
    assert res.usage.completion_tokens == 2 and all(c["finish_reason"] == "length" for c in res.body["choices"])


def test_logprobs_shapes() -> None:
    b = SimulatedBackend(ModelSpec(id="m", backend="simulated"))
    res = _run(b, _req("c", _chat(logprobs=True, top_logprobs=1)),
               _req("p", {"model": "m", "prompt": "x y", "logprobs": 1}, "/v1/completions"))
    content = res["c"].body["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == res["c"].body["choices"][0]["message"]["content"]
    lp = res["p"].body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])


@pytest.mark.parametrize("body", [
    {"model": "m"},
    _chat(n=0),
    _chat(max_tokens=-1),
    _chat(temperature=5),
    {"model": "m", "messages": "hi"},
])
def test_bad_bodies_raise_line_error(body: dict[str, Any]) -> None:
    with pytest.raises(LineError) as exc:
        SimulatedBackend(ModelSpec(id="m", backend="simulated")).add(_req("k", body))
    assert exc.value.status == 400 and exc.value.body()["error"]["message"]


def test_wrong_endpoint_and_bad_prompt() -> None:
    embed = SimulatedBackend(ModelSpec(id="e", backend="simulated", task="embed"))
    with pytest.raises(LineError):
        embed.add(_req("k", _chat()))
    gen = SimulatedBackend(ModelSpec(id="m", backend="simulated"))
    with pytest.raises(LineError):
        gen.add(_req("k", {"model": "m", "prompt": {"x": 1}}, "/v1/completions"))


def test_abort_drops_lines() -> None:
    b = SimulatedBackend(ModelSpec(id="m", backend="simulated"))
    b.add(_req("a", _chat()))
    b.add(_req("b", _chat()))
    b.abort(["a"])
    assert [r.key for r in b.step()] == ["b"] and not b.has_unfinished()


def test_tokens_per_second_sets_the_pace() -> None:
    spec = ModelSpec(id="m", backend="simulated", max_tokens=10, engine_args={"tokens_per_second": 500})
    b = SimulatedBackend(spec)
    reqs = [_req(f"k{i}", _chat(f"prompt {i}", max_tokens=10)) for i in range(30)]
    t0 = time.monotonic()
    out = _run(b, *reqs)
    elapsed = time.monotonic() - t0
    tokens = sum(r.usage.completion_tokens for r in out.values())
    assert len(out) == 30
    assert elapsed >= 0.8 * tokens / 500, (tokens, elapsed)
    assert elapsed < 3 * tokens / 500 + 0.5


def test_factory_picks_backends() -> None:
    spec = ModelSpec(id="m", backend="simulated")
    backend = make_backend(spec, Settings())
    assert isinstance(backend, ResponsesAdapter) and isinstance(backend.inner, SimulatedBackend)
    auto = ModelSpec(id="m", backend="auto", path="x")
    assert resolve_backend(auto, Settings()) in ("vllm", "transformers")
    assert resolve_backend(auto, Settings(backend="simulated")) == "simulated"


def test_window_bounds_and_wakes_the_feeder() -> None:
    wake = threading.Event()
    w = Window(3, wake)
    assert w.take_up_to(2) == 2 and w.take_up_to(5) == 1 and w.take_up_to(1) == 0
    w.give(1, wake=False)  # the feeder handing back room it did not fill must not wake itself
    assert not wake.is_set() and w.used == 2
    w.give(1)
    assert wake.is_set() and w.used == 1
    w.give(9)  # more than taken: never below zero
    assert w.used == 0 and w.take_up_to(10) == 3


def test_a_window_wakes_the_feeder_once_a_quarter_of_it_is_free() -> None:
    wake = threading.Event()
    w = Window(64, wake)
    assert w.take_up_to(64) == 64
    for _ in range(15):
        w.give(1)
    assert not wake.is_set(), "woken before a quarter of the window was free"
    w.give(1)
    assert wake.is_set() and w.used == 48
    wake.clear()
    w.give(1)  # still more than a quarter free (the feeder has not refilled yet): wakes again
    assert wake.is_set()
    wake.clear()
    assert w.take_up_to(64) == 17
    w.give(1)
    assert not wake.is_set()
    w.give(63)  # empty: always wakes
    assert wake.is_set() and w.used == 0
