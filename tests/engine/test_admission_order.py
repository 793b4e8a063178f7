"""Admission order (#16): the look-ahead groups shared prefixes and starts long answers first.

At the engine seam (the API in process + a real Engine, simulated backend with a prefix cache
smaller than the prompts' distinct prefixes and a small in-flight window), then the look-ahead's
ordering and bounds on their own, then the simulated backend's prefix cache model."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.engine.backend import LineRequest
from runner.engine.lookahead import BLOCK_CHARS, Lookahead, Pool, arrange, describe
from runner.engine.simulated import CACHE_BLOCK, SimulatedBackend
from runner.errors import ConfigError
from runner.model_specs import ModelSpec, parse_model_specs
from runner.settings import Settings, load_settings
from tests.engine.conftest import Harness, check_exactly_once

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
DOC_WORDS = 300  # ~19 cache blocks of 16 tokens a document
CACHE = 400  # tokens: one document and a bit, far less than the six documents


def _doc(d: int) -> str:
    return f"Document {d}. " + " ".join(WORDS[(d * 7 + i * (d + 1)) % len(WORDS)] for i in range(DOC_WORDS))


def _models(**engine_args: Any) -> dict[str, Any]:
    return {"models": [{"id": "sim", "backend": "simulated", "task": "generate", "max_tokens": 256,
                        "engine_args": {"max_inflight": 4, **engine_args}}]}


def _doc_lines(docs: int = 6, questions: int = 8) -> list[dict[str, Any]]:
    """Questions about several long documents, interleaved in the file: doc 0 q 0, doc 1 q 0, ..."""
    lines = []
    for q in range(questions):
        for d in range(docs):
            messages = [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"{_doc(d)}\n\nQuestion {q}: what does part {q} say?"}]
            lines.append({"custom_id": f"d{d}-q{q}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "sim", "messages": messages, "max_tokens": 8}})
    return lines


def _run(tmp_path: Path, name: str, lines: list[dict[str, Any]], models: dict[str, Any],
         restarts: int = 0, **settings: Any) -> tuple[list[dict[str, Any]], float]:
    """Run one batch to completion on a fresh data dir: (output rows in file order, seconds taken
    from the engine's start). `restarts`: stop and start the engine that often once rows appear."""
    s = Settings(data_dir=str(tmp_path / name), engine=False, sweep_interval=3600.0, checkpoint_interval=0.05,
                 poll_interval=0.05, **settings)
    registry = parse_model_specs(models)
    with TestClient(create_app(s, registry)) as client:
        h = Harness(client, s, registry)
        try:
            b = h.submit(lines)
            h.wait_status(b["id"], "in_progress")
            t0 = time.monotonic()
            h.start_engine()
            for _ in range(restarts):
                done = h.wait(b["id"], lambda x: x["request_counts"]["completed"] > 0)["request_counts"]["completed"]
                assert done < len(lines), "finished before the restart: the test restarts nothing"
                h.stop_engine()
                h.start_engine()
            b = h.wait_status(b["id"], "completed", timeout=60)
            elapsed = time.monotonic() - t0
            out, err = check_exactly_once(h, b, [x["custom_id"] for x in lines])
            assert not err
            return out, elapsed
        finally:
            h.stop_engine()


def _cached(rows: list[dict[str, Any]]) -> int:
    return sum(r["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] for r in rows)


# -- at the engine seam --------------------------------------------------------------------------------
def test_shared_prefixes_run_together_hit_the_cache_and_finish_sooner(tmp_path: Path) -> None:
    """Six long documents, eight questions each, interleaved in the file; a prefix cache that holds
    about one document. In file order every line finds its document evicted; in prefix order the
    questions about one document run one after another and seven of eight find it cached, so the
    prompt work (prefill_tokens_per_second) shrinks and the batch ends sooner."""
    lines = _doc_lines()
    models = _models(prefix_cache_tokens=CACHE, prefill_tokens_per_second=12_000)
    by_file, t_file = _run(tmp_path, "file", lines, models, admission_order="file")
    by_prefix, t_prefix = _run(tmp_path, "prefix", lines, models)
    prompt = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in by_prefix)
    assert _cached(by_file) < 0.05 * prompt, _cached(by_file)
    assert _cached(by_prefix) > 0.6 * prompt, (_cached(by_prefix), prompt)
    assert t_prefix < 0.7 * t_file, (t_prefix, t_file)
    # the rows stream out in the order the lines ran: each document's questions together
    docs = [r["custom_id"].split("-")[0] for r in by_prefix]
    assert [d for d, _ in itertools.groupby(docs)] == sorted(set(docs), key=docs.index)
    assert len({d for d, _ in itertools.groupby(docs)}) == 6


def _budget_lines(n: int = 40) -> list[dict[str, Any]]:
    """Short and long answers alternating in the file, prompts sharing nothing."""
    return [{"custom_id": f"{'long' if i % 2 else 'short'}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "sim", "messages": [{"role": "user", "content": f"q{i}"}],
                      "max_tokens": 64 if i % 2 else 4}} for i in range(n)]


def test_long_answers_are_admitted_first(tmp_path: Path) -> None:
    """The lines with the longest output budgets enter the engine first (its rows come out in the
    order it ran them: one at a time, on a paced device)."""
    lines = _budget_lines()
    out, _ = _run(tmp_path, "p", lines, _models(tokens_per_second=4000))
    kinds = [r["custom_id"].split("-")[0] for r in out]
    assert kinds == ["long"] * 20 + ["short"] * 20, kinds
    assert [r["custom_id"] for r in out[:20]] == [x["custom_id"] for x in lines if x["custom_id"] < "m"], \
        "equal budgets keep file order"


@pytest.mark.parametrize("knob", [{"admission_lookahead": 0}, {"admission_order": "file"}])
def test_lookahead_0_or_file_order_keeps_file_order(tmp_path: Path, knob: dict[str, Any]) -> None:
    lines = _budget_lines()
    out, _ = _run(tmp_path, "f", lines, _models(tokens_per_second=4000), **knob)
    assert [r["custom_id"] for r in out] == [x["custom_id"] for x in lines]


def test_exactly_once_across_restarts_in_prefix_order(tmp_path: Path) -> None:
    """Lines held in the look-ahead or in flight when the engine stops are simply read again: every
    custom_id once (check_exactly_once in _run), and the restarted run keeps grouping (the cache
    still pays)."""
    lines = _doc_lines(docs=6, questions=10)
    models = _models(prefix_cache_tokens=CACHE, prefill_tokens_per_second=12_000, tokens_per_second=3000)
    out, _ = _run(tmp_path, "r", lines, models, restarts=2)
    prompt = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in out)
    assert _cached(out) > 0.5 * prompt, (_cached(out), prompt)


def test_settings_are_checked() -> None:
    assert load_settings(environ={"RUNNER_ADMISSION_LOOKAHEAD": "0"}).admission_lookahead == 0
    assert load_settings(environ={}).admission_order == "prefix"
    with pytest.raises(ConfigError, match="RUNNER_ADMISSION_ORDER"):
        load_settings(environ={"RUNNER_ADMISSION_ORDER": "random"})
    with pytest.raises(ConfigError, match="RUNNER_ADMISSION_LOOKAHEAD"):
        load_settings(environ={"RUNNER_ADMISSION_LOOKAHEAD": "-1"})


# -- the look-ahead on its own -------------------------------------------------------------------------
def _held(key: str, budget: int, name: str) -> tuple[str, int, int, str]:
    return key, budget, len(key), name


def _names(order: list[tuple[str, int, int, str]]) -> list[str]:
    return [h[3] for h in order]


def test_arrange_keeps_each_shared_prefix_together_under_a_common_one() -> None:
    """Every line starts with the same system prompt (more than a block); below it, documents
    interleaved in the file: each document's lines come out together (the tree, not just the
    first block), in file order among equals."""
    system = "system: " + "be brief and exact. " * 10
    held = [_held(f"{system}user: {_doc(d)} question {q}", 8, f"d{d}q{q}") for q in range(3) for d in range(4)]
    names = _names(arrange(held))
    assert names == [f"d{d}q{q}" for d in range(4) for q in range(3)], names


def test_arrange_longest_budget_first_without_splitting_a_group() -> None:
    doc_a, doc_b = "A" * (3 * BLOCK_CHARS), "B" * (3 * BLOCK_CHARS)
    held = [_held("short one", 4, "s1"), _held(doc_a + "1", 4, "a1"), _held("medium", 32, "m"),
            _held(doc_b + "1", 16, "b1"), _held(doc_a + "2", 64, "a2"), _held(doc_b + "2", 8, "b2"),
            _held("short two", 4, "s2")]
    # group A holds the longest budget (64): first, as a whole, its longest line first; then the
    # 32-token singleton; group B (16); the 4-token lines last, in file order
    assert _names(arrange(held)) == ["a2", "a1", "m", "b1", "b2", "s1", "s2"]


def test_arrange_needs_a_whole_block_to_group() -> None:
    """Keys sharing less than one block share no cached block: budgets alone order them."""
    common = "x" * (BLOCK_CHARS - 1)
    held = [_held(common + "1" + "y" * 100, 4, "p"), _held("other", 8, "o"), _held(common + "2" + "y" * 100, 4, "q")]
    assert _names(arrange(held)) == ["o", "p", "q"]
    shared = "x" * BLOCK_CHARS
    held = [_held(shared + "1", 4, "p"), _held("other", 8, "o"), _held(shared + "2", 2, "q")]
    assert _names(arrange(held)) == ["o", "p", "q"]  # p and q group, behind o's longer budget
    held = [_held(shared + "1", 4, "p"), _held("other", 3, "o"), _held(shared + "2", 2, "q")]
    assert _names(arrange(held)) == ["p", "q", "o"]


def _source(n: int, seen: list[int]) -> Iterator[str]:
    for i in range(n):
        seen.append(i)
        yield f"line {i}"


def _hold(budget: Any = 1, size: int = 100) -> Any:
    """describe for _source's lines: (key, budget, bytes, packed)."""
    return lambda s: (s, budget(s) if callable(budget) else budget, size, s.encode())


def _unpack(packed: bytes) -> str:
    return packed.decode()


def test_lookahead_holds_at_most_its_share_of_lines_and_bytes() -> None:
    seen: list[int] = []
    la = Lookahead(_source(1000, seen), Pool(lines=64, nbytes=1 << 30), _hold(lambda s: int(s.split()[1]) % 7), _unpack)
    out = []
    while (item := la.next()) is not None:
        out.append(item)
        assert len(seen) - len(out) <= 64  # read but not handed out
    assert sorted(out) == sorted(f"line {i}" for i in range(1000)) and len(out) == 1000
    assert out[:3] != ["line 0", "line 1", "line 2"]  # it did reorder

    seen.clear()
    la = Lookahead(_source(1000, seen), Pool(lines=10_000, nbytes=10_000), _hold(size=100), _unpack)
    assert la.next() == "line 0" and len(seen) == 100  # 100 lines of 100 bytes

    # two feeds of the model share it: each reads at most half
    seen_a: list[int] = []
    seen_b: list[int] = []
    pool = Pool(lines=100, nbytes=1 << 30)
    a = Lookahead(_source(1000, seen_a), pool, _hold(), _unpack)
    b = Lookahead(_source(1000, seen_b), pool, _hold(), _unpack)
    a.next()
    b.next()
    assert len(seen_a) == 50 and len(seen_b) == 50
    while a.next() is not None:
        pass
    assert len(pool.members) == 1  # a finished: its share goes back
    given = 1
    while b.next() is not None:
        given += 1
        assert len(seen_b) - given <= 100
    assert given == 1000 and len(seen_b) == 1000


def test_lookahead_passes_unrunnable_lines_at_once_and_keeps_file_order_for_equals() -> None:
    items = [f"ok {i}" if i != 5 else "bad 5" for i in range(10)]
    la = Lookahead(iter(items), Pool(100, 1 << 20), lambda x: None if x.startswith("bad") else ("same", 1, 10, x),
                   lambda packed: packed)
    out = [la.next() for _ in range(11)]
    assert out[0] == "bad 5"  # read ahead to it: handed out before the held lines
    assert out[1:] == [f"ok {i}" for i in range(10) if i != 5] + [None]


def test_describe_reads_budget_and_prefix() -> None:
    spec = ModelSpec(id="m", backend="simulated", max_tokens=100)
    chat = {"messages": [{"role": "system", "content": "S"},
                         {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert describe(spec, "/v1/chat/completions", chat) == ("system: S\nuser: hi\n", 100)
    more = {**chat, "max_completion_tokens": 7, "max_tokens": 9, "n": 3}
    assert describe(spec, "/v1/chat/completions", more)[1] == 21
    assert describe(spec, "/v1/completions", {"prompt": ["ab", "cd"], "max_tokens": 5, "n": 2}) == ("ab", 20)
    assert describe(spec, "/v1/completions", {"prompt": "p"})[1] == 16  # the completions default
    assert describe(spec, "/v1/responses", {"instructions": "I", "input": "x", "max_output_tokens": 3}) == (
        "system: I\nuser: x\n", 3)
    assert describe(spec, "/v1/chat/completions", {"messages": "not a list"}) == ("", 100)


# -- the simulated backend's prefix cache --------------------------------------------------------------
def _answer(b: SimulatedBackend, content: str, key: str = "k") -> dict[str, Any]:
    b.add(LineRequest(key=key, batch_id="b", custom_id=key, endpoint="/v1/chat/completions",
                      body={"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 4}))
    results: list[Any] = []
    while b.has_unfinished():
        results += b.step()
    return dict(results[-1].body["usage"])


def test_simulated_prefix_cache_counts_whole_cached_blocks() -> None:
    spec = ModelSpec(id="m", backend="simulated", engine_args={"prefix_cache_tokens": 64})
    b = SimulatedBackend(spec)
    text = " ".join(f"w{i}" for i in range(40))  # 2 + 5 + 39 = 46 prompt tokens: 2 whole blocks
    first = _answer(b, text)
    assert first["prompt_tokens"] == 46 and first["prompt_tokens_details"]["cached_tokens"] == 0
    assert _answer(b, text)["prompt_tokens_details"]["cached_tokens"] == 2 * CACHE_BLOCK
    assert _answer(b, text + " more words")["prompt_tokens_details"]["cached_tokens"] == 2 * CACHE_BLOCK
    assert _answer(b, "other " + text)["prompt_tokens_details"]["cached_tokens"] == 0  # chained: all differ
    # 64 tokens = 4 blocks: the two prompts above evicted the first one's blocks... in LRU order
    assert _answer(b, "third " + text)["prompt_tokens_details"]["cached_tokens"] == 0
    assert _answer(b, text)["prompt_tokens_details"]["cached_tokens"] == 0
    # a prompt found whole still computes its last block (the answer starts from its last token)
    exact = " ".join(f"w{i}" for i in range(26))  # 2 + 5 + 25 = 32 tokens: 2 whole blocks
    assert _answer(b, exact)["prompt_tokens"] == 32
    assert _answer(b, exact)["prompt_tokens_details"]["cached_tokens"] == CACHE_BLOCK
    # no cache: 0, as from a backend without one
    assert _answer(SimulatedBackend(ModelSpec(id="m", backend="simulated")), text)["prompt_tokens_details"][
        "cached_tokens"] == 0


def test_simulated_prefill_rate_charges_uncached_tokens_only() -> None:
    spec = ModelSpec(id="m", backend="simulated",
                     engine_args={"prefix_cache_tokens": 4096, "prefill_tokens_per_second": 2000})
    b = SimulatedBackend(spec)
    text = " ".join(f"w{i}" for i in range(400))  # ~400 tokens: 0.2 s uncached
    t0 = time.monotonic()
    _answer(b, text)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    _answer(b, text, "k2")
    warm = time.monotonic() - t0
    assert cold >= 0.18 and warm < cold / 3, (cold, warm)


def test_simulated_cache_args_are_checked() -> None:
    with pytest.raises(ConfigError, match="prefix_cache_tokens"):
        SimulatedBackend(ModelSpec(id="m", backend="simulated", engine_args={"prefix_cache_tokens": -1}))
    with pytest.raises(ConfigError, match="prefix_cache_size"):  # a misspelt one is never ignored
        SimulatedBackend(ModelSpec(id="m", backend="simulated", engine_args={"prefix_cache_size": 1}))
