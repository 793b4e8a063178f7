"""GET /v1/model-config (Mithril), GET /v1/models (OpenAI), GET /health."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import load_model_specs
from runner.settings import Settings

MITHRIL_FIELDS = {
    "id", "name", "description", "input_price_cents", "output_price_cents", "model_code",
    "num_parameters_billions", "num_experts", "context_length", "display_order", "license_url", "created_at",
    "updated_at", "status",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def test_model_config_has_every_mithril_field(client: TestClient) -> None:
    r = client.get("/v1/model-config")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"active_models"}
    models = body["active_models"]
    assert [m["id"] for m in models] == ["sim-chat", "sim-embed"]
    for m in models:
        assert set(m) == MITHRIL_FIELDS | {"endpoints"}
        assert m["name"] == m["id"] and m["model_code"] == m["id"]
        assert m["status"] == "active"
        assert ISO.match(m["created_at"]) and ISO.match(m["updated_at"])
        assert isinstance(m["input_price_cents"], int | float)


def test_model_config_from_models_yaml(settings: Settings, tmp_path: Path) -> None:
    yaml_path = tmp_path / "models.yaml"
    yaml_path.write_text(
        """
models:
  - id: b-model
    backend: simulated
    name: Model B
    description: The second one
    input_price_cents: 3
    output_price_cents: 9
    model_code: bm
    num_parameters_billions: 0.135
    num_experts: 8
    context_length: 8192
    display_order: 2
    license_url: https://example.invalid/license
    created_at: "2025-09-29T21:47:53.119Z"
    updated_at: "2025-10-01T00:00:00.000Z"
    status: deprecated
  - id: a-model
    backend: simulated
    display_order: 1
""",
        encoding="utf-8",
    )
    with TestClient(create_app(settings, load_model_specs(yaml_path))) as c:
        models = c.get("/v1/model-config").json()["active_models"]
    assert [m["id"] for m in models] == ["a-model", "b-model"]  # by display_order
    assert models[1] == {
        "id": "b-model", "name": "Model B", "description": "The second one", "input_price_cents": 3,
        "output_price_cents": 9, "model_code": "bm", "num_parameters_billions": 0.135, "num_experts": 8,
        "context_length": 8192, "display_order": 2, "license_url": "https://example.invalid/license",
        "created_at": "2025-09-29T21:47:53.119Z", "updated_at": "2025-10-01T00:00:00.000Z",
        "status": "deprecated", "endpoints": ["/v1/chat/completions", "/v1/completions", "/v1/responses"],
    }


def test_models_openai_shape(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["sim-chat", "sim-embed"]
    for m in body["data"]:
        assert set(m) == {"id", "object", "created", "owned_by", "endpoints"}
        assert m["object"] == "model" and isinstance(m["created"], int) and isinstance(m["owned_by"], str)
    # which batch endpoints each model serves (its task decides)
    assert [m["endpoints"] for m in body["data"]] == [
        ["/v1/chat/completions", "/v1/completions", "/v1/responses"], ["/v1/embeddings"]]


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
