"""One shape for every backend (#12): the transformers backend's bodies against the simulated
backend's, key by key, on the same lines (tests/response_shape.py; tests/vllm does the same for
vLLM). Also checks shape_diff itself, so a comparison that always passed would fail here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from response_shape import EMBED_LINES, GENERATE_LINES, requests, shape_diff, simulated_bodies

from runner.model_specs import ModelSpec
from runner.settings import Settings

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from fixtures.tiny_models import build_tiny_bert, build_tiny_llama  # noqa: E402

from runner.engine.hf_backend import HFBackend  # noqa: E402


def _bodies(backend: HFBackend, lines: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    for req in requests(lines, backend.spec.id):
        backend.add(req)
    out: dict[str, Any] = {}
    while backend.has_unfinished():
        for r in backend.step():
            assert r.status_code == 200, (r.key, r.body)
            out[r.key] = r.body
    backend.close()
    return out


def test_shape_diff_finds_what_differs() -> None:
    a = {"choices": [{"message": {"content": "x", "tool_calls": []}}], "usage": {"prompt_tokens_details": {}}}
    b = {"choices": [{"message": {"content": None}}], "usage": {"prompt_tokens_details": None}}
    assert shape_diff(a, b) == ["body.choices[0].message: only in the first ['tool_calls'], only in the second []",
                                "body.usage.prompt_tokens_details: dict vs NoneType"]
    assert shape_diff(a, a) == []


def test_transformers_bodies_have_the_simulated_shape(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), threads=1)
    llama = build_tiny_llama(tmp_path / "llama")
    gen = HFBackend(ModelSpec(id="tiny", backend="transformers", path=str(llama), task="generate",
                              max_tokens=8), settings)
    bert = build_tiny_bert(tmp_path / "bert")
    emb = HFBackend(ModelSpec(id="tiny-emb", backend="transformers", path=str(bert), task="embed"), settings)
    ours = _bodies(gen, GENERATE_LINES) | _bodies(emb, EMBED_LINES)
    reference = simulated_bodies(GENERATE_LINES, "generate") | simulated_bodies(EMBED_LINES, "embed")
    assert set(ours) == set(reference)
    diffs = [d for key in sorted(reference) for d in shape_diff(reference[key], ours[key], key)]
    assert diffs == []
