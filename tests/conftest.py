"""Shared fixtures: settings on a temp data dir, a models registry, the app in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry, parse_model_specs
from runner.settings import Settings

SIM_MODELS = {
    "models": [
        {"id": "sim-chat", "backend": "simulated", "task": "generate", "max_tokens": 32},
        {"id": "sim-embed", "backend": "simulated", "task": "embed"},
    ]
}


@pytest.fixture
def registry() -> ModelRegistry:
    return parse_model_specs(SIM_MODELS)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0)


@pytest.fixture
def client(settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(settings, registry)) as c:
        yield c
