"""models.yaml -> validated ModelSpecs (unknown keys and missing local paths are errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.errors import ConfigError

BACKENDS = ("auto", "vllm", "transformers", "simulated")
TASKS = ("generate", "embed")
ENDPOINTS_BY_TASK = {
    # /v1/responses runs as a chat completion (engine/responses_api.py), so every generate model serves it
    "generate": ("/v1/chat/completions", "/v1/completions", "/v1/responses"),
    "embed": ("/v1/embeddings",),
}
SUPPORTED_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")

# The model-config fields of the Mithril document, with their defaults when models.yaml omits them.
CONFIG_FIELDS: dict[str, Any] = {
    "name": None,
    "description": "",
    "input_price_cents": 0,
    "output_price_cents": 0,
    "model_code": None,
    "num_parameters_billions": None,
    "num_experts": None,
    "context_length": None,
    "display_order": None,
    "license_url": None,
    "status": "active",
}
_OWN_FIELDS = ("id", "path", "backend", "task", "max_tokens", "engine_args", "created_at", "updated_at")
_ALLOWED = set(_OWN_FIELDS) | set(CONFIG_FIELDS)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of models.yaml."""

    id: str
    backend: str = "auto"
    path: str | None = None
    task: str = "generate"
    max_tokens: int = 512
    engine_args: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    display_order: int = 0

    @property
    def endpoints(self) -> tuple[str, ...]:
        return ENDPOINTS_BY_TASK[self.task]

    def serves(self, endpoint: str) -> bool:
        return endpoint in self.endpoints


@dataclass(frozen=True)
class ModelRegistry:
    """The models of one models.yaml, by id, in file order; `mtime` lets the model-config change."""

    specs: tuple[ModelSpec, ...]
    source: str = ""
    mtime: float = 0.0

    def get(self, model_id: str) -> ModelSpec | None:
        for spec in self.specs:
            if spec.id == model_id:
                return spec
        return None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.specs)


def looks_local(path: str) -> bool:
    """A path on this machine (absolute, relative, ~ or a .gguf file), not a hub id."""
    return path.startswith(("/", "./", "../", "~")) or path.endswith(".gguf")


def parse_model_specs(data: Any, *, base_dir: Path | None = None, source: str = "models.yaml") -> ModelRegistry:
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"{source}: expected a top-level 'models:' list")
    unknown_top = set(data) - {"models"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown top-level keys: {', '.join(sorted(unknown_top))}")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(data["models"]):
        where = f"{source}: models[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - _ALLOWED
        if unknown:
            raise ConfigError(
                f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))} "
                f"(allowed: {', '.join(sorted(_ALLOWED))})"
            )
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not model_id.strip():
            raise ConfigError(f"{where}: 'id' is required and must be a non-empty string")
        where = f"{source}: model {model_id!r}"
        if model_id in seen:
            raise ConfigError(f"{where}: duplicate id")
        seen.add(model_id)
        backend = entry.get("backend")
        if backend not in BACKENDS:
            raise ConfigError(f"{where}: 'backend' is required, one of {', '.join(BACKENDS)}")
        task = entry.get("task", "generate")
        if task not in TASKS:
            raise ConfigError(f"{where}: 'task' must be one of {', '.join(TASKS)}")
        path = entry.get("path")
        if path is None and backend != "simulated":
            raise ConfigError(f"{where}: 'path' is required for backend {backend}")
        if path is not None:
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{where}: 'path' must be a string")
            if looks_local(path):
                local = Path(path).expanduser()
                if not local.is_absolute() and base_dir is not None:
                    local = base_dir / local
                if not local.exists():
                    raise ConfigError(f"{where}: path {path!r} does not exist")
                path = str(local)
        max_tokens = entry.get("max_tokens", 512)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ConfigError(f"{where}: 'max_tokens' must be a positive integer")
        engine_args = entry.get("engine_args") or {}
        if not isinstance(engine_args, dict):
            raise ConfigError(f"{where}: 'engine_args' must be a mapping")
        config = {k: entry.get(k, default) for k, default in CONFIG_FIELDS.items()}
        for key in ("input_price_cents", "output_price_cents", "num_parameters_billions", "num_experts",
                    "context_length", "display_order"):
            value = config[key]
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise ConfigError(f"{where}: {key!r} must be a number")
        if config["name"] is None:
            config["name"] = model_id
        if config["model_code"] is None:
            config["model_code"] = model_id
        if config["display_order"] is None:
            config["display_order"] = i
        specs.append(
            ModelSpec(
                id=model_id,
                backend=backend,
                path=path,
                task=task,
                max_tokens=max_tokens,
                engine_args=dict(engine_args),
                config=config,
                created_at=_iso(entry.get("created_at")),
                updated_at=_iso(entry.get("updated_at")),
                display_order=int(config["display_order"]),
            )
        )
    if not specs:
        raise ConfigError(f"{source}: 'models' is empty")
    return ModelRegistry(tuple(specs), source=source)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def load_model_specs(path: str | Path) -> ModelRegistry:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"models file {str(p)!r} does not exist (set --models or RUNNER_MODELS)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    registry = parse_model_specs(data, base_dir=p.parent.resolve(), source=str(p))
    return ModelRegistry(registry.specs, source=str(p), mtime=p.stat().st_mtime)
