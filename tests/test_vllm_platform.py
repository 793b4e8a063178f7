"""runner/engine/vllm_platform.py: where auto picks vLLM, and runner's CPU defaults for it."""

from __future__ import annotations

from runner.engine.vllm_platform import GiB, cpu_defaults, cpu_supported, vllm_device

AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_cpu_supported_needs_x86_64_with_avx512() -> None:
    assert cpu_supported(AVX512, "x86_64")
    assert not cpu_supported(AVX2, "x86_64")
    assert not cpu_supported(AVX512, "aarch64")
    assert not cpu_supported("model name: avx512f in a name only\n", "x86_64")


def test_vllm_device_is_none_without_vllm() -> None:
    # the main test venv has no vllm: auto must fall back to transformers here
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert vllm_device() is None


def test_defaults_on_a_small_box() -> None:
    env: dict[str, str] = {}
    d = cpu_defaults({}, env, free_bytes=20 * GiB, cpus=2)
    assert d.args == {"kv_cache_memory_bytes": 3 * GiB, "enforce_eager": True}
    assert d.env == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert len(d.notes) == 3
    assert env == {}  # it says what to set; the backend sets it


def test_kv_cache_is_clamped() -> None:
    assert cpu_defaults({}, {}, free_bytes=1 * GiB, cpus=2).args["kv_cache_memory_bytes"] == GiB // 2
    assert cpu_defaults({}, {}, free_bytes=200 * GiB, cpus=2).args["kv_cache_memory_bytes"] == 4 * GiB


def test_the_users_choices_win() -> None:
    d = cpu_defaults({"kv_cache_memory_bytes": 123, "enforce_eager": False}, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"},
                     free_bytes=20 * GiB, cpus=2)
    assert d.args == {} and d.env == {} and d.notes == []
    d = cpu_defaults({"compilation_config": {"mode": 3}}, {"VLLM_CPU_KVCACHE_SPACE": "2"}, cpus=2)
    assert "kv_cache_memory_bytes" not in d.args and "enforce_eager" not in d.args


def test_runner_settings_set_size_and_reserved_cores() -> None:
    d = cpu_defaults({}, {}, kv_cache_gib=1.5, reserved_cpus=1, free_bytes=20 * GiB, cpus=64)
    assert d.args["kv_cache_memory_bytes"] == int(1.5 * GiB)
    assert d.env == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}


def test_many_cores_keep_vllms_choice() -> None:
    assert cpu_defaults({}, {}, free_bytes=20 * GiB, cpus=16).env == {}
