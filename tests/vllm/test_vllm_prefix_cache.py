"""Prefix caching on real vLLM through runner (#16): usage.prompt_tokens_details.cached_tokens is what
vLLM's prefix cache served (RequestOutput.num_cached_tokens), per line and summed on the Batch.

A real `runner serve` (tests/engine/test_server.Server: API + engine child, the official openai
client) with backend vllm on the tiny dummy-weight Llama (CUDA or CPU). Lines that share a system
prompt longer than a few cache blocks must report cached tokens after the first of them; lines that
share nothing must report none. A runner that dropped vLLM's figure (0 or absent) or invented one
fails the first half or the second.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from vllm_helpers import CHILD_ENV, TINY_ENGINE_ARGS, engine_args_yaml, make_tiny_llama, skip_unless_vllm

skip_unless_vllm()
from engine.test_server import Server, _exactly_once, _jsonl, _wait  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LOAD_TIMEOUT = 420.0
MAX_MODEL_LEN = 1024
# vLLM caches whole blocks only (16 tokens on CUDA, 128 on this CPU): the shared prompt spans several.
SHARED_TOKENS = (600, 700)


def _models_yaml(tiny: Path) -> str:
    lines = engine_args_yaml({**TINY_ENGINE_ARGS, "max_model_len": MAX_MODEL_LEN, "enable_prefix_caching": True})
    return f"""
models:
  - id: tiny-chat
    backend: vllm
    task: generate
    path: {tiny}
    max_tokens: 16
    engine_args:
{lines}
"""


def _text(tokenizer: Any, rng: random.Random, lo: int, hi: int) -> str:
    """Random words whose token count (the tiny model's own tokenizer) lies in [lo, hi]."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < lo:
        words.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7))))
    text = " ".join(words)
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= hi
    return text


def _lines(prefix: str, systems: list[str], questions: list[str]) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "tiny-chat", "max_tokens": 4, "ignore_eos": True,
                  "messages": [{"role": "system", "content": s}, {"role": "user", "content": q}]}}
        for i, (s, q) in enumerate(zip(systems, questions, strict=True))
    ]  # fmt: skip


def _run(server: Server, lines: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    c = server.client
    f = c.files.create(file=_jsonl(lines), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = _wait(c, b.id, ("completed", "failed"), timeout=LOAD_TIMEOUT)
    assert b.status == "completed", (b, server.log_path.read_text()[-4000:])
    out, err = _exactly_once(c, b, [x["custom_id"] for x in lines])
    assert not err, err
    usages = [r["response"]["body"]["usage"] for r in out]
    for u in usages:  # shaped as vLLM's server reports it, within bounds on every line
        cached = u["prompt_tokens_details"]["cached_tokens"]
        assert isinstance(cached, int) and 0 <= cached <= u["prompt_tokens"], u
    # the Batch's usage is the sum of its rows'
    assert b.usage is not None
    assert b.usage.input_tokens == sum(u["prompt_tokens"] for u in usages)
    assert b.usage.output_tokens == sum(u["completion_tokens"] for u in usages) == 4 * len(lines)
    assert b.usage.input_tokens_details.cached_tokens == sum(u["prompt_tokens_details"]["cached_tokens"]
                                                              for u in usages)
    return b, usages


def test_shared_system_prompt_reports_cached_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tiny = make_tiny_llama(tmp_path / "tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(tiny))
    rng = random.Random(16)
    n = 12
    shared = _text(tok, rng, *SHARED_TOKENS)
    questions = [_text(tok, rng, 8, 40) for _ in range(n)]
    server = Server(tmp_path, _models_yaml(tiny), env=CHILD_ENV)
    try:
        b, usages = _run(server, _lines("s", [shared] * n, questions))
        cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
        # the first line in computes the shared blocks; every later one finds them in the cache
        hits = [c for c in cached if c > 0]
        assert len(hits) >= n - 1, cached
        assert min(hits) >= SHARED_TOKENS[0] // 2, cached  # most of the shared prompt, in whole blocks
        assert b.usage.input_tokens_details.cached_tokens < b.usage.input_tokens

        # no shared prefix (fresh text on every line): vLLM serves nothing from the cache
        systems = [_text(tok, rng, *SHARED_TOKENS) for _ in range(4)]
        b, usages = _run(server, _lines("u", systems, questions[:4]))
        assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0] * 4
    finally:
        server.stop()
