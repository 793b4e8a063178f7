"""/v1/responses on the real vLLM engine (tiny dummy-weight Llama, CUDA or CPU), through the
ResponsesAdapter that make_backend puts around every generate backend.

A line runs as the chat completion it means (same text as the chat line, greedy); its body has the
keys of vLLM's own ResponsesResponse and parses as the openai SDK's Response (vLLM's model wants
numbers for temperature, top_p and max_output_tokens where runner echoes a parameter the request
did not set as null, as OpenAI's Response type allows); a body that vLLM's
ResponsesRequest refuses is a line error with vLLM's message, before runner's conversion sees it.
"""

from __future__ import annotations

import json

import pytest
from vllm_helpers import BACKEND_PRELUDE, make_tiny_llama, run_fresh, skip_unless_vllm

skip_unless_vllm()
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama"))


def test_responses_lines_on_vllm(tiny: str) -> None:
    out = run_fresh(BACKEND_PRELUDE + f"\nPATH = {tiny!r}\n" + """
from openai.types.responses import Response
from vllm.entrypoints.openai.responses.protocol import ResponsesResponse
from runner.engine.responses_api import ResponsesAdapter

b = ResponsesAdapter(make(PATH))
R = "/v1/responses"
good = [
    line("b:resp", R, {"model": "tiny", "instructions": "Be brief.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello world"}]}],
        "max_output_tokens": 6, "temperature": 0}),
    line("b:chat", "/v1/chat/completions", {"model": "tiny", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
        "max_completion_tokens": 6, "temperature": 0}),
    line("b:cut", R, {"model": "tiny", "input": "Hello", "max_output_tokens": 3, "ignore_eos": True}),
]
r = run(b, good)
refused = {}
for key, body in {
    "required": {"model": "tiny", "input": "x", "tool_choice": "required"},
    "both": {"model": "tiny", "input": "x", "text": {"format": {"type": "json_object"}},
             "structured_outputs": {"json_object": True}},
    "type": {"model": "tiny", "input": "x", "temperature": "hot"},
    "store": {"model": "tiny", "input": "x", "store": True},
}.items():
    try:
        b.add(line("b:" + key, R, body))
        refused[key] = None
    except LineError as exc:
        refused[key] = [exc.status, exc.param, exc.message]
assert not b.has_unfinished()
b.close()
resp, cut = r["b:resp"].body, r["b:cut"].body
for body in (resp, cut):
    Response.model_validate(body)  # (vLLM's ResponsesResponse wants numbers where runner echoes an unset null)
print(json.dumps({"resp": resp, "chat": r["b:chat"].body, "cut": cut, "refused": refused,
                  "usage": [r["b:resp"].usage.prompt_tokens, r["b:resp"].usage.completion_tokens],
                  "vllm_keys": sorted(set(ResponsesResponse.model_fields) - {"metrics"})}))
""")
    res = json.loads(out.strip().splitlines()[-1])
    resp, chat, cut = res["resp"], res["chat"], res["cut"]
    assert sorted(resp) == res["vllm_keys"]  # the keys of vLLM's own response model, no more, no fewer
    assert resp["object"] == "response" and resp["id"].startswith("resp_") and resp["model"] == "tiny"
    text = "".join(p["text"] for p in resp["output"][0]["content"])
    assert text == chat["choices"][0]["message"]["content"]  # the same prompt and sampling as the chat line
    assert resp["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"] == res["usage"][0]
    assert resp["usage"]["output_tokens"] == chat["usage"]["completion_tokens"] == res["usage"][1]
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["usage"]["output_tokens"] == 3
    refused = res["refused"]
    # vLLM's ResponsesRequest speaks first: its messages, not those of runner's chat conversion
    assert refused["required"][:2] == [400, "tool_choice"]
    assert "must be specified with 'tools'" in refused["required"][2]
    assert refused["both"][:2] == [400, "structured_outputs"] and "text.format" in refused["both"][2]
    assert refused["type"][0] == 400 and refused["type"][2].startswith("temperature:"), refused["type"]
    assert len(refused["type"][2]) < 300
    # runner's own refusal where vLLM's model accepts the field (store defaults to true there)
    assert refused["store"][:2] == [400, "store"]
