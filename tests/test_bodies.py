"""Body conversion: OpenAI request bodies -> normalised inputs, every bad value -> LineError."""

from __future__ import annotations

from typing import Any

import pytest

from runner.engine.bodies import (
    ChatInput,
    CompletionInput,
    EmbeddingInput,
    check_supported,
    parse_line,
)
from runner.errors import LineError
from runner.model_specs import ModelSpec

SPEC = ModelSpec(id="m", backend="simulated", task="generate", max_tokens=40)
EMB = ModelSpec(id="e", backend="simulated", task="embed")
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMBD = "/v1/embeddings"
MSGS = [{"role": "user", "content": "hi"}]


def chat(**kw: Any) -> ChatInput:
    out = parse_line(CHAT, {"model": "m", "messages": MSGS, **kw}, SPEC)
    assert isinstance(out, ChatInput)
    return out


def bad(endpoint: str, body: Any, param: str | None, code: str | None = None) -> LineError:
    spec = EMB if endpoint == EMBD else SPEC
    with pytest.raises(LineError) as ei:
        parse_line(endpoint, body, spec)
    err = ei.value
    assert err.status == 400
    assert err.param == param, err.message
    if code is not None:
        assert err.code == code
    assert err.body()["error"]["type"] == "invalid_request_error"
    return err


def test_chat_defaults_cap_max_tokens_at_the_model_default() -> None:
    c = chat()
    assert c.model == "m"
    assert c.messages == ({"role": "user", "content": "hi"},)
    s = c.sampling
    assert (s.max_tokens, s.max_tokens_given, s.temperature, s.top_p, s.n) == (40, False, 1.0, 1.0, 1)
    assert s.stop == () and s.seed is None and s.logprobs is None and not s.greedy
    assert c.add_generation_prompt is True


def test_chat_values_pass_through() -> None:
    s = chat(max_completion_tokens=7, max_tokens=99, temperature=0, top_p=0.5, n=3, stop="x", seed=5,
             presence_penalty=1.5, frequency_penalty=-1, logprobs=True, top_logprobs=3, ignore_eos=True,
             top_k=-1, response_format={"type": "text"}, user="u", metadata={"a": "b"}).sampling
    assert s.max_tokens == 7 and s.max_tokens_given
    assert (s.temperature, s.top_p, s.n, s.stop, s.seed) == (0.0, 0.5, 3, ("x",), 5)
    assert (s.presence_penalty, s.frequency_penalty, s.logprobs, s.ignore_eos) == (1.5, -1.0, 3, True)
    assert s.top_k == 0 and s.response_format is None and s.greedy


def test_chat_max_tokens_above_the_default_is_kept() -> None:
    assert chat(max_tokens=500).sampling.max_tokens == 500


def test_chat_content_parts_and_roles() -> None:
    c = chat(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "c", "name": "bob"},
    ])
    assert c.messages == (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "c", "name": "bob"},
    )


def test_continue_final_message() -> None:
    c = chat(messages=[*MSGS, {"role": "assistant", "content": "Par"}], continue_final_message=True)
    assert c.continue_final_message and not c.add_generation_prompt


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 129}, "n", "invalid_value"),
        ({"n": 1.5}, "n", "invalid_value"),
        ({"n": True}, "n", "invalid_value"),
        ({"max_tokens": -1}, "max_tokens", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_tokens": 10**12}, "max_tokens", "invalid_value"),
        ({"max_tokens": "10"}, "max_tokens", "invalid_value"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
        ({"temperature": -0.1}, "temperature", "invalid_value"),
        ({"temperature": 2.5}, "temperature", "invalid_value"),
        ({"temperature": "hot"}, "temperature", "invalid_value"),
        ({"temperature": float("nan")}, "temperature", "invalid_value"),
        ({"top_p": 0}, "top_p", "invalid_value"),
        ({"top_p": 1.1}, "top_p", "invalid_value"),
        ({"top_k": -2}, "top_k", "invalid_value"),
        ({"presence_penalty": 3}, "presence_penalty", "invalid_value"),
        ({"frequency_penalty": -2.1}, "frequency_penalty", "invalid_value"),
        ({"repetition_penalty": 0}, "repetition_penalty", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"stop": 3}, "stop", "invalid_value"),
        ({"stop": [""]}, "stop", "invalid_value"),
        ({"seed": "1"}, "seed", "invalid_value"),
        ({"seed": 2**70}, "seed", "invalid_value"),
        ({"logprobs": 1}, "logprobs", "invalid_value"),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"ignore_eos": "yes"}, "ignore_eos", "invalid_value"),
        ({"stream": True}, "stream", "invalid_value"),
        ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "invalid_value"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "invalid_value"),
        ({"min_tokens": 50}, "min_tokens", "invalid_value"),
        ({"best_of": 3}, "best_of", "unsupported_parameter"),
        ({"temprature": 0.5}, "temprature", "unknown_parameter"),
        ({"chat_template": "{{x}}"}, "chat_template", "unsupported_parameter"),
        ({"model": 3}, "model", "invalid_value"),
        ({"messages": []}, "messages", None),
        ({"messages": "hi"}, "messages", "invalid_value"),
        ({"messages": ["hi"]}, "messages[0]", "invalid_value"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_value"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "invalid_value"),
        # a text-only model: the 400 says it has no vision (content_parts.no_vision)
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].type", "model_not_multimodal"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "input_audio"}]}]},
         "messages[0].content[1].type", "model_not_multimodal"),
        ({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
         "messages[0].content[0].type", "unsupported_parameter"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
         "messages[0].content[0].text", "invalid_value"),
        ({"messages": [{"role": "user", "content": "x"}], "continue_final_message": True},
         "continue_final_message", "invalid_value"),
    ],
)
def test_chat_bad_values(extra: dict[str, Any], param: str, code: str | None) -> None:
    bad(CHAT, {"model": "m", "messages": MSGS, **extra}, param, code)


def test_unknown_parameter_message_matches_openai() -> None:
    err = bad(CHAT, {"model": "m", "messages": MSGS, "foo": 1}, "foo", "unknown_parameter")
    assert err.message == "Unrecognized request argument supplied: foo"


def test_unknown_parameter_name_is_bounded() -> None:
    err = bad(CHAT, {"model": "m", "messages": MSGS, "z" * 10_000: 1}, "z" * 100 + "…(+9900 chars)",
              "unknown_parameter")
    assert len(err.message) < 200


def test_body_not_an_object() -> None:
    bad(CHAT, ["x"], None, "invalid_body")


def test_unknown_endpoint_is_an_invalid_url_line_error() -> None:
    with pytest.raises(LineError) as ei:
        parse_line("/v1/moderations", {}, SPEC)
    # the code validation and `runner run` give the same condition (runner/error_codes.py)
    assert (ei.value.status, ei.value.code, ei.value.param) == (400, "invalid_url", "url")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a", ("a",)),
        (["a", "b"], ("a", "b")),
        ([1, 2, 3], ((1, 2, 3),)),
        ([[1, 2], [3]], ((1, 2), (3,))),
    ],
)
def test_completion_prompt_shapes(prompt: Any, expected: tuple[Any, ...]) -> None:
    c = parse_line(COMP, {"model": "m", "prompt": prompt}, SPEC)
    assert isinstance(c, CompletionInput)
    assert c.prompts == expected
    assert c.sampling.max_tokens == 16  # OpenAI's / vLLM's completions default, under the cap
    assert not c.echo


def test_completion_logprobs_int_and_echo_with_zero_tokens() -> None:
    c = parse_line(COMP, {"model": "m", "prompt": "a", "logprobs": 2, "echo": True, "max_tokens": 0}, SPEC)
    assert isinstance(c, CompletionInput)
    assert c.sampling.logprobs == 2 and c.echo and c.sampling.max_tokens == 0


def test_completion_default_respects_a_small_model_cap() -> None:
    spec = ModelSpec(id="m", backend="simulated", max_tokens=8)
    c = parse_line(COMP, {"model": "m", "prompt": "a"}, spec)
    assert isinstance(c, CompletionInput) and c.sampling.max_tokens == 8


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"prompt": None}, "prompt", "missing_required_parameter"),
        ({"prompt": []}, "prompt", "invalid_value"),
        ({"prompt": [1, "a"]}, "prompt", "invalid_value"),
        ({"prompt": [[1], []]}, "prompt", "invalid_value"),
        ({"prompt": [-1]}, "prompt", "invalid_value"),
        ({"prompt": 5}, "prompt", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"logprobs": True}, "logprobs", "invalid_value"),
        ({"logprobs": 21}, "logprobs", "invalid_value"),
        ({"suffix": "x"}, "suffix", "unsupported_parameter"),
        ({"messages": MSGS}, "messages", "unknown_parameter"),
        ({"top_logprobs": 2}, "top_logprobs", "unknown_parameter"),
    ],
)
def test_completion_bad_values(extra: dict[str, Any], param: str, code: str) -> None:
    bad(COMP, {"model": "m", "prompt": "a", **extra}, param, code)


def test_embedding_inputs() -> None:
    e = parse_line(EMBD, {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}, EMB)
    assert isinstance(e, EmbeddingInput)
    assert (e.inputs, e.encoding_format, e.dimensions) == (("a", "b"), "base64", 8)
    e = parse_line(EMBD, {"model": "e", "input": [[5, 6]]}, EMB)
    assert isinstance(e, EmbeddingInput) and e.inputs == ((5, 6),) and e.encoding_format == "float"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"input": None}, "input", "missing_required_parameter"),
        ({"input": [""]}, "input", "invalid_value"),
        ({"input": {"a": 1}}, "input", "invalid_value"),
        ({"encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"dimensions": 0}, "dimensions", "invalid_value"),
        ({"dimensions": "8"}, "dimensions", "invalid_value"),
        ({"normalize": False}, "normalize", "unsupported_parameter"),
        ({"temperature": 0}, "temperature", "unknown_parameter"),
    ],
)
def test_embedding_bad_values(extra: dict[str, Any], param: str, code: str) -> None:
    bad(EMBD, {"model": "e", "input": "a", **extra}, param, code)


def test_check_supported_names_the_parameter() -> None:
    everything = {"temperature", "top_p", "n", "stop", "seed"}
    check_supported(chat(temperature=0.5, n=2, stop=["x"], seed=1), everything, "test")
    check_supported(chat(), set(), "test")  # neutral values need no support
    with pytest.raises(LineError) as ei:
        check_supported(chat(presence_penalty=0.5), everything, "test")
    assert (ei.value.param, ei.value.code) == ("presence_penalty", "unsupported_parameter")
    assert "test backend" in ei.value.message
    with pytest.raises(LineError) as ei:
        check_supported(chat(logprobs=True, top_logprobs=2), everything, "test")
    assert ei.value.param == "top_logprobs"
    with pytest.raises(LineError) as ei:
        check_supported(chat(response_format={"type": "json_object"}), everything, "test")
    assert ei.value.param == "response_format"
    with pytest.raises(LineError) as ei:
        check_supported(chat(tools=[{"type": "function"}]), everything, "test")
    assert ei.value.param == "tools"
    with pytest.raises(LineError) as ei:
        check_supported(chat(bad_words=["x"]), everything, "test")
    assert ei.value.param == "bad_words"


def test_image_part_says_the_model_has_no_vision() -> None:
    spec = ModelSpec(id="text-model", backend="simulated")
    body = {"model": "text-model", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    with pytest.raises(LineError) as ei:
        parse_line("/v1/chat/completions", body, spec)
    assert ei.value.code == "model_not_multimodal" and ei.value.param == "messages[1].content[1].type"
    assert "'text-model' has no vision" in ei.value.message
    # text parts in any role are fine
    body["messages"][1]["content"].pop()
    assert parse_line("/v1/chat/completions", body, spec).messages[0]["content"] == "be brief"
