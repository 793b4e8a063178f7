"""The simulated backend ignores no parameter: every field the chat and completions parsers accept is
set away from its default and must change the answer (honoured), be refused with a 400 naming it, or
be listed as inert. Then structured output and tool calls, checked with a real JSON Schema validator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema_rs
import orjson
import pytest

from runner.engine import bodies
from runner.engine.backend import LineRequest
from runner.engine.simulated import FIELDS, HONOURED, INERT, REFUSED, SUPPORTED, SimulatedBackend
from runner.errors import LineError
from runner.model_specs import ModelSpec

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TOOL2 = {"type": "function", "function": {"name": "noop"}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string", "format": "email"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age"], "additionalProperties": False}


def _spec(**kw: Any) -> ModelSpec:
    return ModelSpec(id="m", backend="simulated", **kw)


def _body(endpoint: str, **extra: Any) -> dict[str, Any]:
    if endpoint == CHAT:
        return {"model": "m", "messages": [{"role": "user", "content": "hello there friend"}], **extra}
    return {"model": "m", "prompt": "once upon a time", **extra}


def _answer(body: dict[str, Any], endpoint: str = CHAT, spec: ModelSpec | None = None) -> dict[str, Any]:
    b = SimulatedBackend(spec or _spec())
    b.add(LineRequest(key="k", batch_id="b", custom_id="k", endpoint=endpoint, body=body))
    (res,) = b.step()
    assert res.status_code == 200
    return {k: v for k, v in res.body.items() if k != "created"}


def _text(endpoint: str) -> str:
    c = _answer(_body(endpoint), endpoint)["choices"][0]
    return str(c["message"]["content"] if endpoint == CHAT else c["text"])


def _stop_word(endpoint: str) -> str:
    return " " + _text(endpoint).split()[2]


# field -> (endpoint, base body extras, extras that set the field); callables get the endpoint
Extras = dict[str, Any] | Callable[[str], dict[str, Any]]
CASES: dict[str, tuple[str, Extras, Extras]] = {
    # honoured: the answer changes
    "model": (CHAT, {}, {"model": "other"}),
    "messages": (CHAT, {}, {"messages": [{"role": "user", "content": "something else"}]}),
    "prompt": (COMPLETIONS, {}, {"prompt": "something else"}),
    "max_tokens": (CHAT, {}, {"max_tokens": 2}),
    "max_completion_tokens": (CHAT, {}, {"max_completion_tokens": 2}),
    "n": (CHAT, {}, {"n": 2}),
    "seed": (CHAT, {}, {"seed": 7}),
    "temperature": (CHAT, {}, {"temperature": 0.5}),
    "top_p": (CHAT, {}, {"top_p": 0.5}),
    "top_k": (CHAT, {}, {"top_k": 5}),
    "min_p": (CHAT, {}, {"min_p": 0.1}),
    "presence_penalty": (CHAT, {}, {"presence_penalty": 0.5}),
    "frequency_penalty": (CHAT, {}, {"frequency_penalty": 0.5}),
    "repetition_penalty": (CHAT, {}, {"repetition_penalty": 1.2}),
    "stop": (CHAT, {}, lambda e: {"stop": _stop_word(e)}),
    "include_stop_str_in_output": (CHAT, lambda e: {"stop": _stop_word(e)}, {"include_stop_str_in_output": True}),
    "ignore_eos": (CHAT, {"max_tokens": 100}, {"ignore_eos": True}),
    "min_tokens": (CHAT, {"max_tokens": 100}, {"min_tokens": 60}),
    "logprobs": (CHAT, {}, {"logprobs": True}),
    "top_logprobs": (CHAT, {"logprobs": True}, {"top_logprobs": 2}),
    "response_format": (CHAT, {}, {"response_format": {"type": "json_object"}}),
    "tools": (CHAT, {}, {"tools": [TOOL], "tool_choice": "required"}),
    "tool_choice": (CHAT, {"tools": [TOOL]}, {"tool_choice": "required"}),
    "echo": (COMPLETIONS, {}, {"echo": True}),
    "add_generation_prompt": (CHAT, {}, {"add_generation_prompt": False}),
    "continue_final_message": (CHAT, {"messages": [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "Well,"}],
                                      "add_generation_prompt": False}, {"continue_final_message": True}),
    # refused: 400 naming the field
    "stop_token_ids": (CHAT, {}, {"stop_token_ids": [5]}),
    "logit_bias": (CHAT, {}, {"logit_bias": {"5": 10}}),
    "bad_words": (CHAT, {}, {"bad_words": ["fox"]}),
    "allowed_token_ids": (CHAT, {}, {"allowed_token_ids": [1, 2]}),
    "prompt_logprobs": (CHAT, {}, {"prompt_logprobs": 1}),
    "return_token_ids": (CHAT, {}, {"return_token_ids": True}),
    "return_tokens_as_token_ids": (CHAT, {}, {"return_tokens_as_token_ids": True}),
    "truncate_prompt_tokens": (CHAT, {}, {"truncate_prompt_tokens": 3}),
    "structured_outputs": (CHAT, {}, {"structured_outputs": {"json": {"type": "object"}}}),
    "guided_json": (CHAT, {}, {"guided_json": {"type": "object"}}),
    "guided_regex": (CHAT, {}, {"guided_regex": "a+"}),
    "guided_choice": (CHAT, {}, {"guided_choice": ["a", "b"]}),
    "guided_grammar": (CHAT, {}, {"guided_grammar": "root ::= 'a'"}),
    "use_beam_search": (CHAT, {}, {"use_beam_search": True}),
    "length_penalty": (CHAT, {}, {"length_penalty": 0.5}),
    "functions": (CHAT, {}, {"functions": [{"name": "f", "parameters": {}}]}),
    "function_call": (CHAT, {}, {"function_call": "auto"}),
    "audio": (CHAT, {}, {"audio": {"voice": "alloy", "format": "wav"}}),
    "modalities": (CHAT, {}, {"modalities": ["text", "audio"]}),
    "web_search_options": (CHAT, {}, {"web_search_options": {}}),
    "verbosity": (CHAT, {}, {"verbosity": "low"}),
    "documents": (CHAT, {}, {"documents": [{"title": "t", "text": "x"}]}),
    "vllm_xargs": (CHAT, {}, {"vllm_xargs": {"a": 1}}),
    "chat_template": (CHAT, {}, {"chat_template": "{{ messages }}"}),
    "suffix": (COMPLETIONS, {}, {"suffix": "the end"}),
    "prompt_embeds": (COMPLETIONS, {}, {"prompt_embeds": "AAAA"}),
    "stream": (CHAT, {}, {"stream": True}),
    "best_of": (CHAT, {}, {"best_of": 2}),
    # inert: nothing a stand-in answers changes
    "user": (CHAT, {}, {"user": "u-1"}),
    "metadata": (CHAT, {}, {"metadata": {"a": "b"}}),
    "store": (CHAT, {}, {"store": True}),
    "service_tier": (CHAT, {}, {"service_tier": "flex"}),
    "stream_options": (CHAT, {}, {"stream_options": {"include_usage": True}}),
    "priority": (CHAT, {}, {"priority": 3}),
    "request_id": (CHAT, {}, {"request_id": "r-1"}),
    "cache_salt": (CHAT, {}, {"cache_salt": "salt"}),
    "prompt_cache_key": (CHAT, {}, {"prompt_cache_key": "key"}),
    "safety_identifier": (CHAT, {}, {"safety_identifier": "s"}),
    "kv_transfer_params": (CHAT, {}, {"kv_transfer_params": {"x": 1}}),
    "prediction": (CHAT, {}, {"prediction": {"type": "content", "content": "x"}}),
    "parallel_tool_calls": (CHAT, {"tools": [TOOL], "tool_choice": "required"}, {"parallel_tool_calls": False}),
    "skip_special_tokens": (CHAT, {}, {"skip_special_tokens": False}),
    "spaces_between_special_tokens": (CHAT, {}, {"spaces_between_special_tokens": False}),
    "add_special_tokens": (CHAT, {}, {"add_special_tokens": True}),
    "chat_template_kwargs": (CHAT, {}, {"chat_template_kwargs": {"enable_thinking": False}}),
    "mm_processor_kwargs": (CHAT, {}, {"mm_processor_kwargs": {"x": 1}}),
    "include_reasoning": (CHAT, {}, {"include_reasoning": False}),
    "reasoning_effort": (CHAT, {}, {"reasoning_effort": "low"}),
}


def test_every_field_the_parsers_accept_is_classified_and_tested() -> None:
    accepted = bodies._CHAT_FIELDS | bodies._COMPLETION_FIELDS
    assert set(FIELDS) == accepted, "classify new fields in simulated.FIELDS"
    assert set(CASES) == accepted, "give new fields a case here"
    assert set(FIELDS.values()) == {HONOURED, REFUSED, INERT}


def test_neutral_params_are_honoured_exactly_where_supported() -> None:
    """Each bodies.NEUTRAL key is a field; the backend tells check_supported it honours exactly the
    honoured ones (plus skip_special_tokens: there are no special tokens to skip)."""
    for key in bodies.NEUTRAL:
        assert key in FIELDS, key
        assert (key in SUPPORTED) == (FIELDS[key] == HONOURED or key == "skip_special_tokens"), key


def _extras(x: Extras, endpoint: str) -> dict[str, Any]:
    return x(endpoint) if callable(x) else x


@pytest.mark.parametrize("field", sorted(CASES))
def test_each_field_away_from_its_default(field: str) -> None:
    endpoint, base, setting = CASES[field]
    before = _body(endpoint, **_extras(base, endpoint))
    after = {**before, **_extras(setting, endpoint)}
    if FIELDS[field] == REFUSED:
        with pytest.raises(LineError) as exc:
            _answer(after, endpoint)
        err = exc.value.body()["error"]
        assert exc.value.status == 400 and err["param"] == field, err
        assert err["code"] == ("invalid_value" if field == "stream" else "unsupported_parameter"), err
        return
    a, b = _answer(before, endpoint), _answer(after, endpoint)
    if FIELDS[field] == HONOURED:
        assert a != b, f"{field} set changed nothing: silently ignored"
    else:
        assert a == b, f"{field} is listed inert but changed the answer"


# -- what the honoured sampling parameters do -------------------------------------------------------


def test_greedy_ignores_seed_and_gives_identical_choices() -> None:
    a = _answer(_body(CHAT, temperature=0, seed=1, n=3))
    b = _answer(_body(CHAT, temperature=0, seed=2, n=3))
    assert a == b
    texts = {c["message"]["content"] for c in a["choices"]}
    assert len(texts) == 1
    sampled = {c["message"]["content"] for c in _answer(_body(CHAT, seed=1, n=3))["choices"]}
    assert len(sampled) > 1


def test_stop_ignore_eos_min_tokens_include_stop() -> None:
    words = _text(CHAT).split()
    stop = " " + words[2]
    cut = _answer(_body(CHAT, stop=stop))["choices"][0]
    assert cut["message"]["content"] == " ".join(words[:2]) and cut["stop_reason"] == stop
    kept = _answer(_body(CHAT, stop=stop, include_stop_str_in_output=True))["choices"][0]
    assert kept["message"]["content"] == " ".join(words[:3])
    long = _answer(_body(CHAT, max_tokens=150, ignore_eos=True))
    assert long["usage"]["completion_tokens"] == 150 and long["choices"][0]["finish_reason"] == "length"
    assert len(long["choices"][0]["message"]["content"].split()) == 150
    floor = _answer(_body(CHAT, max_tokens=100, min_tokens=60, stop=stop))
    assert floor["usage"]["completion_tokens"] >= 60
    assert len(floor["choices"][0]["message"]["content"].split()) >= 60


# -- structured output -------------------------------------------------------------------------------


def _schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


def test_json_schema_answers_are_valid_and_depend_on_the_line() -> None:
    validator = jsonschema_rs.validator_for(PERSON, validate_formats=True)
    seen = set()
    for i in range(20):
        body = _body(CHAT, response_format=_schema_format(PERSON), n=2, seed=i, max_tokens=400)
        out = _answer(body)
        for c in out["choices"]:
            assert c["finish_reason"] == "stop" and "tool_calls" not in c["message"]
            value = orjson.loads(c["message"]["content"])
            assert validator.is_valid(value), value
            seen.add(c["message"]["content"])
            assert out["usage"]["completion_tokens"] > 0
        assert out == _answer(body)  # deterministic
    assert len(seen) > 20


def test_json_object_and_logprobs_cover_the_text() -> None:
    out = _answer(_body(CHAT, response_format={"type": "json_object"}, logprobs=True, top_logprobs=1))
    c = out["choices"][0]
    assert isinstance(orjson.loads(c["message"]["content"]), dict)
    assert "".join(t["token"] for t in c["logprobs"]["content"]) == c["message"]["content"]
    assert len(c["logprobs"]["content"]) == out["usage"]["completion_tokens"]


def test_max_tokens_cuts_structured_output_as_generation_would() -> None:
    c = _answer(_body(CHAT, response_format=_schema_format(PERSON), max_tokens=3))["choices"][0]
    assert c["finish_reason"] == "length" and len(c["message"]["content"]) == 12
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(c["message"]["content"])


@pytest.mark.parametrize(("schema", "code", "keyword"), [
    ({"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}}, "unsupported_parameter",
     "pattern"),
    ({"not": {"type": "null"}}, "unsupported_parameter", "not"),
    ({"type": "integer", "minimum": 10, "maximum": 1}, "invalid_value", "maximum"),
    ({"type": "object", "properties": "nope"}, "invalid_value", "properties"),
    ({"type": "object", "properties": {"a": {"minLength": "x"}}, "required": ["a"]}, "invalid_value", "minLength"),
])
def test_schemas_it_cannot_honour_are_400s_naming_the_keyword(schema: Any, code: str, keyword: str) -> None:
    with pytest.raises(LineError) as exc:
        _answer(_body(CHAT, response_format=_schema_format(schema)))
    err = exc.value.body()["error"]
    assert exc.value.status == 400 and err["code"] == code and err["param"] == "response_format", err
    assert f"'{keyword}'" in err["message"], err


@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos"),
    ({"response_format": {"type": "json_object"}, "min_tokens": 3}, "min_tokens"),
    ({"response_format": {"type": "structural_tag"}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"tools": [TOOL], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function"}], "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
      "tool_choice": "required"}, "tools"),
])
def test_structured_combinations_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(LineError) as exc:
        _answer(_body(CHAT, **extra))
    assert exc.value.status == 400 and exc.value.body()["error"]["param"] == param


# -- tool calls ---------------------------------------------------------------------------------------


def _check_call(call: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    assert call["type"] == "function" and call["id"].startswith("chatcmpl-tool-")
    fn = next(t["function"] for t in tools if t["function"]["name"] == call["function"]["name"])
    args = orjson.loads(call["function"]["arguments"])
    assert jsonschema_rs.validator_for(fn.get("parameters", {"type": "object"})).is_valid(args), args


def test_required_tool_choice_makes_a_valid_call() -> None:
    names = set()
    for i in range(12):
        out = _answer(_body(CHAT, tools=[TOOL, TOOL2], tool_choice="required", seed=i, n=2))
        for c in out["choices"]:
            m = c["message"]
            assert c["finish_reason"] == "tool_calls" and m["content"] == "" and len(m["tool_calls"]) == 1
            assert list(m) == ["role", "content", "refusal", "annotations", "audio", "function_call", "tool_calls",
                               "reasoning"]  # vLLM's ChatMessage order
            _check_call(m["tool_calls"][0], [TOOL, TOOL2])
            names.add(m["tool_calls"][0]["function"]["name"])
        assert out["usage"]["completion_tokens"] > 0
    assert names == {"get_weather", "noop"}


def test_named_tool_choice_calls_that_function() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    for i in range(8):
        c = _answer(_body(CHAT, tools=[TOOL2, TOOL], tool_choice=choice, seed=i))["choices"][0]
        assert c["finish_reason"] == "stop"  # as OpenAI and vLLM: "stop" for a named function
        assert c["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        _check_call(c["message"]["tool_calls"][0], [TOOL])


def test_auto_and_none_answer_in_text_and_a_cut_call_is_no_call() -> None:
    for choice in ("auto", "none", None):
        extra = {} if choice is None else {"tool_choice": choice}
        c = _answer(_body(CHAT, tools=[TOOL], **extra))["choices"][0]
        assert "tool_calls" not in c["message"] and c["message"]["content"] and c["finish_reason"] != "tool_calls"
    c = _answer(_body(CHAT, tools=[TOOL], tool_choice="required", max_tokens=2))["choices"][0]
    assert c["finish_reason"] == "length" and "tool_calls" not in c["message"] and len(c["message"]["content"]) == 8
