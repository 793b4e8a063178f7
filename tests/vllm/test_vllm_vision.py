"""Image parts on vLLM (#13): a multimodal model takes them as `vllm serve` does; a text-only
model refuses them with model_not_multimodal before vLLM's parser fetches anything (that half is in
test_vllm_backend.py::test_bad_bodies_are_line_errors).

No small vision model loads offline here: none is packaged on PyPI and the hub is unreachable, so
this test skips unless RUNNER_TEST_VISION_MODEL names a local multimodal model folder (for example
a Qwen2-VL or SmolVLM checkout), as on a GPU box with a model cache.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib

import pytest
from vllm_helpers import BACKEND_PRELUDE, run_fresh, skip_unless_vllm

skip_unless_vllm()
pytestmark = pytest.mark.vllm

MODEL = os.environ.get("RUNNER_TEST_VISION_MODEL", "")


def _red_png(size: int = 32) -> str:
    """A solid red PNG as a data URL (no file, no network)."""
    row = b"\x00" + b"\xff\x00\x00" * size
    raw = zlib.compress(row * size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.mark.skipif(not MODEL, reason="no small vision model loads offline; set RUNNER_TEST_VISION_MODEL")
def test_multimodal_model_answers_an_image_part() -> None:
    out = run_fresh(BACKEND_PRELUDE + f"""
b = VllmBackend(ModelSpec(id="vlm", backend="vllm", path={MODEL!r}, max_tokens=16,
                          engine_args={{"max_model_len": 4096, "enforce_eager": True}}), Settings())
msgs = [{{"role": "user", "content": [{{"type": "text", "text": "What colour is this image? One word."}},
                                      {{"type": "image_url", "image_url": {{"url": {_red_png()!r}}}}}]}}]
r = run(b, [line("v:1", "/v1/chat/completions", {{"model": "vlm", "messages": msgs, "temperature": 0}})])
b.close()
print(json.dumps([r["v:1"].status_code, r["v:1"].body]))
""")
    status, body = json.loads(out.strip().splitlines()[-1])
    assert status == 200, body
    assert "red" in body["choices"][0]["message"]["content"].lower()
