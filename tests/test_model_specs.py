"""models.yaml -> ModelSpecs: unknown keys, missing ids, bad types and missing local paths are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.model_specs import CONFIG_FIELDS, load_model_specs, parse_model_specs

REPO = Path(__file__).resolve().parent.parent


def _one(**entry: Any) -> dict[str, Any]:
    return {"models": [{"id": "m", "backend": "simulated", **entry}]}


def test_minimal_entry_gets_defaults() -> None:
    spec = parse_model_specs(_one()).specs[0]
    assert (spec.id, spec.backend, spec.task, spec.max_tokens, spec.engine_args) == ("m", "simulated", "generate",
                                                                                    512, {})
    assert set(spec.config) == set(CONFIG_FIELDS)
    assert spec.config["name"] == "m" and spec.config["model_code"] == "m" and spec.config["display_order"] == 0
    assert spec.endpoints == ("/v1/chat/completions", "/v1/completions", "/v1/responses")
    assert spec.serves("/v1/completions") and not spec.serves("/v1/embeddings")


def test_embed_task_serves_embeddings() -> None:
    spec = parse_model_specs(_one(task="embed")).specs[0]
    assert spec.endpoints == ("/v1/embeddings",)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "models:"),
        ({"models": "x"}, "models:"),
        ({"models": [], "extra": 1}, "unknown top-level"),
        ({"models": []}, "empty"),
        ({"models": ["m"]}, "mapping"),
        ({"models": [{"backend": "simulated"}]}, "'id'"),
        ({"models": [{"id": "m", "backend": "simulated"}, {"id": "m", "backend": "simulated"}]}, "duplicate"),
        (_one(colour="red"), "unknown keys colour"),
        ({"models": [{"id": "m"}]}, "backend"),
        ({"models": [{"id": "m", "backend": "tpu"}]}, "backend"),
        (_one(task="rerank"), "task"),
        ({"models": [{"id": "m", "backend": "transformers"}]}, "path"),
        (_one(path="./does/not/exist"), "does not exist"),
        (_one(max_tokens=0), "max_tokens"),
        (_one(max_tokens=True), "max_tokens"),
        (_one(engine_args=[1]), "engine_args"),
        (_one(context_length="long"), "context_length"),
        (_one(input_price_cents=True), "input_price_cents"),
    ],
)
def test_bad_models_yaml_is_a_config_error(data: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_model_specs(data)


def test_hub_style_path_is_kept_and_local_path_resolved(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    reg = parse_model_specs(
        {"models": [{"id": "a", "backend": "vllm", "path": "org/model"},
                    {"id": "b", "backend": "transformers", "path": "./weights"}]},
        base_dir=tmp_path,
    )
    assert reg.get("a").path == "org/model"  # type: ignore[union-attr]
    assert reg.get("b").path == str(tmp_path / "weights")  # type: ignore[union-attr]
    assert reg.get("c") is None and reg.ids == ("a", "b")


def test_load_model_specs_reads_yaml(tmp_path: Path) -> None:
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  - id: x\n    backend: simulated\n    created_at: 2025-09-29T21:47:53Z\n")
    reg = load_model_specs(p)
    assert reg.ids == ("x",) and reg.mtime > 0 and reg.source == str(p)
    assert reg.specs[0].created_at is not None and reg.specs[0].created_at.startswith("2025-09-29T21:47:53")


def test_load_model_specs_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_specs(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_model_specs(bad)


def test_repository_models_yaml_is_valid() -> None:
    reg = load_model_specs(REPO / "models.yaml")
    assert reg.specs
