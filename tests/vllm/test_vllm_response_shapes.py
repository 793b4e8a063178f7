"""One shape for every backend (#12), vLLM's side: VllmBackend's bodies for the lines of
tests/response_shape.py against the simulated backend's, key by key, and against the pinned vLLM's
own response models (ChatCompletionResponse / CompletionResponse / EmbeddingResponse
.model_validate(body).model_dump(), i.e. what `vllm serve` would send)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from vllm_helpers import BACKEND_PRELUDE, make_tiny_llama, run_fresh, skip_unless_vllm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared shape lines
from response_shape import EMBED_LINES, GENERATE_LINES, shape_diff, simulated_bodies  # noqa: E402

skip_unless_vllm()
pytestmark = pytest.mark.vllm

CHILD = """
import json
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse
from vllm.entrypoints.openai.completion.protocol import CompletionResponse
from vllm.entrypoints.pooling.embed.protocol import EmbeddingResponse
MODELS = {"chat.completion": ChatCompletionResponse, "text_completion": CompletionResponse,
          "list": EmbeddingResponse}
out = {}
for task, lines, extra in (("generate", GEN, {}), ("embed", EMB, {"convert": "embed"})):
    b = make(PATH, task=task, **extra)
    r = run(b, [line(k, url, {"model": "tiny", **body}) for k, (url, body) in lines.items()])
    b.close()
    for k, res in r.items():
        assert res.status_code == 200, (k, res.body)
        served = MODELS[res.body["object"]].model_validate(res.body).model_dump()
        out[k] = [res.body, json.loads(json.dumps(served, default=str))]
print(json.dumps(out))
"""


def test_vllm_bodies_have_the_simulated_shape_and_vllms_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny = make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
    code = (BACKEND_PRELUDE + f"\nPATH = {str(tiny)!r}\nGEN = json.loads({json.dumps(GENERATE_LINES)!r})\n"
            f"EMB = json.loads({json.dumps(EMBED_LINES)!r})\n" + CHILD)
    got = json.loads(run_fresh(code).strip().splitlines()[-1])
    reference = simulated_bodies(GENERATE_LINES, "generate") | simulated_bodies(EMBED_LINES, "embed")
    assert set(got) == set(reference)
    diffs = []
    for key in sorted(reference):
        ours, served = got[key]
        diffs += shape_diff(reference[key], ours, f"{key} (simulated vs vllm)")
        diffs += shape_diff(served, ours, f"{key} (vllm serve vs runner)")
    assert diffs == []
