"""Response building: per-choice outputs -> bodies shaped like vLLM's OpenAI server."""

from __future__ import annotations

import math

from runner.engine.responses import (
    ChoiceOutput,
    PromptOutput,
    TokenLogprob,
    TopLogprob,
    chat_completion_body,
    completion_body,
    decode_base64,
    embedding_body,
    encode_base64,
    usage_of,
)


def test_chat_completion_shape_and_usage() -> None:
    body = chat_completion_body(
        "m",
        PromptOutput(prompt_tokens=9, choices=(
            ChoiceOutput("Paris.", 3, "stop"),
            ChoiceOutput("The capital", 5, "length"),
        )),
        created=123,
    )
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert (body["object"], body["created"], body["model"]) == ("chat.completion", 123, "m")
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 17, "completion_tokens": 8,
                             "prompt_tokens_details": {"cached_tokens": 0, "created_cache_tokens": None,
                                                       "multimodal_tokens": None},
                             "completion_tokens_details": None}
    c0, c1 = body["choices"]
    assert c0["index"] == 0 and c1["index"] == 1
    assert c0["message"]["role"] == "assistant" and c0["message"]["content"] == "Paris."
    assert "tool_calls" not in c0["message"]  # vLLM drops an empty list (ChatMessage._serialize)
    assert (c0["finish_reason"], c1["finish_reason"]) == ("stop", "length")
    assert c0["logprobs"] is None and c0["stop_reason"] is None
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert usage_of(body).prompt_tokens == 9 and usage_of(body).completion_tokens == 8


def test_chat_logprobs_shape() -> None:
    lp = TokenLogprob("a", -0.5, (97,), (TopLogprob("a", -0.5, (97,)), TopLogprob("b", -1.0, (98,))))
    body = chat_completion_body("m", PromptOutput(1, (ChoiceOutput("a", 1, "stop", "\n", (lp,)),)))
    choice = body["choices"][0]
    assert choice["stop_reason"] == "\n"
    assert choice["logprobs"] == {"content": [{
        "token": "a", "logprob": -0.5, "bytes": [97],
        "top_logprobs": [{"token": "a", "logprob": -0.5, "bytes": [97]},
                         {"token": "b", "logprob": -1.0, "bytes": [98]}],
    }]}


def test_completion_indexes_run_on_across_prompts_and_echo() -> None:
    body = completion_body("m", [
        PromptOutput(2, (ChoiceOutput("x", 1), ChoiceOutput("y", 1, "length")), prompt_text="P1 "),
        PromptOutput(3, (ChoiceOutput("z", 2), ChoiceOutput("w", 2))),
    ])
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == ["P1 x", "P1 y", "z", "w"]
    assert body["choices"][1]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == 6
    assert body["usage"]["total_tokens"] == 11


def test_completion_logprobs_shape() -> None:
    lps = (TokenLogprob("ab", -0.1, None, (TopLogprob("cd", -2.0),)), TokenLogprob("c", -0.2))
    body = completion_body("m", [PromptOutput(1, (ChoiceOutput("abc", 2, "length", None, lps),),
                                              prompt_text="xy")])
    assert body["choices"][0]["logprobs"] == {
        "text_offset": [2, 4], "token_logprobs": [-0.1, -0.2], "tokens": ["ab", "c"],
        "top_logprobs": [{"cd": -2.0, "ab": -0.1}, {"c": -0.2}],
    }


def test_embedding_body_float_and_base64() -> None:
    vecs = [[0.6, 0.8], [1.0, 0.0]]
    body = embedding_body("e", vecs, 7)
    assert body["id"].startswith("embd-") and body["object"] == "list" and body["model"] == "e"
    assert body["data"] == [{"index": 0, "object": "embedding", "embedding": [0.6, 0.8]},
                            {"index": 1, "object": "embedding", "embedding": [1.0, 0.0]}]
    # UsageInfo.model_dump() of vLLM's pooling usage: completion_tokens 0 is there too
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7, "completion_tokens": 0,
                             "prompt_tokens_details": None, "completion_tokens_details": None}
    b64 = embedding_body("e", vecs, 7, encoding_format="base64")
    enc = b64["data"][0]["embedding"]
    assert isinstance(enc, str) and enc == encode_base64([0.6, 0.8])
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decode_base64(enc), [0.6, 0.8], strict=True))
    assert usage_of(body).prompt_tokens == 7 and usage_of(body).completion_tokens == 0


def test_base64_matches_numpy_float32_layout() -> None:
    import base64
    import struct

    raw = base64.b64decode(encode_base64([1.0, -2.5]))
    assert raw == struct.pack("<ff", 1.0, -2.5)
