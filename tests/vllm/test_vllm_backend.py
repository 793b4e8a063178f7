"""VllmBackend through the real vLLM engine on a tiny dummy-weight Llama (CUDA or CPU).

Skipped where vLLM does not import. Every test runs in a fresh process (vllm_helpers.run_fresh). Dummy
weights give garbage text, so the tests assert on counts, indices, finish reasons, usage and
shapes, and use `ignore_eos` with fixed `max_tokens` where lengths matter.
"""

from __future__ import annotations

import json

import pytest
from vllm_helpers import BACKEND_PRELUDE, DEVICE, make_tiny_llama, run_fresh, skip_unless_vllm

skip_unless_vllm()
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama"))


def _child(tiny: str, body: str) -> dict:
    out = run_fresh(BACKEND_PRELUDE + f"\nPATH = {tiny!r}\n" + body)
    return json.loads(out.strip().splitlines()[-1])


def test_chat_n_and_usage(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
assert b.default_max_inflight == 64  # 2 x max_num_seqs
msgs = [{"role": "user", "content": "Hello world"}]
r = run(b, [line("b:1", "/v1/chat/completions",
                 {"model": "tiny", "messages": msgs, "n": 3, "max_tokens": 5, "ignore_eos": True}),
            line("b:2", "/v1/chat/completions", {"model": "tiny", "messages": msgs, "ignore_eos": True})])
b.close()
print(json.dumps({k: [v.status_code, v.body, v.usage.prompt_tokens, v.usage.completion_tokens]
                  for k, v in r.items()}))
""",
    )
    status, body, prompt_tokens, completion_tokens = res["b:1"]
    assert status == 200 and body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" and c["message"]["role"] == "assistant" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 15 == completion_tokens
    assert body["usage"]["prompt_tokens"] == prompt_tokens > 0
    details = body["usage"]["prompt_tokens_details"]
    assert details is None or details["cached_tokens"] >= 0
    # max_tokens omitted: capped by models.yaml max_tokens (32 here), not by the context
    assert res["b:2"][1]["usage"]["completion_tokens"] == 32


def test_chat_prompt_has_one_bos(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
r = run(b, [line("b:1", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
             "max_tokens": 1, "return_token_ids": True})])
b.close()
print(json.dumps(r["b:1"].body))
""",
    )
    ids = res["prompt_token_ids"]  # the template starts with {{ bos_token }} (id 1)
    assert ids[0] == 1 and ids.count(1) == 1, f"double BOS in {ids[:5]}"


def test_completions_token_ids_and_prompt_lists(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
r = run(b, [
    line("b:1", "/v1/completions", {"model": "tiny", "prompt": [[5, 6, 7], [8, 9]], "n": 2, "max_tokens": 4,
                                     "ignore_eos": True}),
    line("b:2", "/v1/completions", {"model": "tiny", "prompt": ["Hello", "The quick"], "max_tokens": 3,
                                     "ignore_eos": True}),
    line("b:3", "/v1/completions", {"model": "tiny", "prompt": [5, 6, 7, 8], "ignore_eos": True}),
])
b.close()
print(json.dumps({k: v.body for k, v in r.items()}))
""",
    )
    one = res["b:1"]
    assert one["object"] == "text_completion" and [c["index"] for c in one["choices"]] == [0, 1, 2, 3]
    assert one["usage"]["prompt_tokens"] == 5 and one["usage"]["completion_tokens"] == 16
    assert [c["index"] for c in res["b:2"]["choices"]] == [0, 1]
    assert res["b:3"]["usage"]["prompt_tokens"] == 4
    assert res["b:3"]["usage"]["completion_tokens"] == 16  # CompletionRequest's default, as vllm serve


def test_stop_strings(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
body = {"model": "tiny", "prompt": "Hello", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
text = run(b, [line("b:1", "/v1/completions", body)])["b:1"].body["choices"][0]["text"]
stop = text[len(text) // 2:len(text) // 2 + 2]
out = run(b, [line("b:2", "/v1/completions", dict(body, stop=[stop]))])["b:2"].body["choices"][0]
b.close()
print(json.dumps({"text": text, "stop": stop, "out": out}))
""",
    )
    if not res["stop"].strip():
        pytest.skip("the dummy model produced no usable stop string")
    out = res["out"]
    assert out["finish_reason"] == "stop" and out["stop_reason"] == res["stop"]
    assert res["stop"] not in out["text"] and res["text"].startswith(out["text"])


def test_structured_output_json_schema(tiny: str) -> None:
    """OpenAI's response_format, and vLLM's own structured_outputs (which can also forbid free
    whitespace, so random weights cannot fill max_tokens with spaces: every such answer ends)."""
    res = _child(
        tiny,
        """
b = make(PATH)
schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}
msgs = [{"role": "user", "content": "json please"}]
r = run(b, [line(f"rf:{i}", "/v1/chat/completions", {
    "model": "tiny", "messages": msgs, "max_tokens": 64,
    "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}}) for i in range(2)]
  + [line(f"so:{i}", "/v1/chat/completions", {
    "model": "tiny", "messages": msgs, "max_tokens": 64,
    "structured_outputs": {"json": schema, "disable_any_whitespace": True}}) for i in range(2)])
b.close()
print(json.dumps({k: v.body["choices"][0] for k, v in r.items()}))
""",
    )
    for key, choice in res.items():
        text = choice["message"]["content"]
        if key.startswith("so:") or choice["finish_reason"] == "stop":
            assert choice["finish_reason"] == "stop", choice
            assert isinstance(json.loads(text)["ok"], bool)
        else:  # free whitespace may run out of tokens first; what came is the schema's start
            assert text.lstrip() == "" or text.lstrip().startswith("{"), choice


def test_seed_logprobs_and_json_object(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
msgs = [{"role": "user", "content": "Hello"}]
sampled = {"model": "tiny", "prompt": "Hello", "max_tokens": 8, "temperature": 1.0, "ignore_eos": True}
r = run(b, [
    line("s:1", "/v1/completions", dict(sampled, seed=7)),
    line("s:2", "/v1/completions", dict(sampled, seed=7)),
    line("lp:c", "/v1/completions", dict(sampled, seed=1, logprobs=2)),
    line("lp:chat", "/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 5, "ignore_eos": True,
                                             "logprobs": True, "top_logprobs": 2}),
    line("json", "/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 48,
                                          "response_format": {"type": "json_object"}}),
])
b.close()
print(json.dumps({k: v.body for k, v in r.items()}))
""",
    )
    assert res["s:1"]["choices"][0]["text"] == res["s:2"]["choices"][0]["text"]  # same seed, same text
    lp = res["lp:c"]["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == 8
    assert all(len(top) <= 3 for top in lp["top_logprobs"])  # the 2 best plus the sampled token
    content = res["lp:chat"]["choices"][0]["logprobs"]["content"]
    assert len(content) == 5 and all(len(t["top_logprobs"]) == 2 for t in content)
    choice = res["json"]["choices"][0]
    if choice["finish_reason"] == "stop":  # random weights may run out of tokens mid-object
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:
        assert choice["message"]["content"].lstrip() in ("",) or choice["message"]["content"].lstrip()[0] == "{"


def test_bad_bodies_are_line_errors(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
errors = {}
for key, endpoint, body in [
    ("no-messages", "/v1/chat/completions", {"model": "tiny"}),
    ("bad-n", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": "x"}),
    ("too-long", "/v1/completions", {"model": "tiny", "prompt": [5] * 600}),
    ("max-tokens", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 100000}),
    ("embed-on-gen", "/v1/embeddings", {"model": "tiny", "input": "x"}),
    # a text-only model: refused before vLLM's parser would fetch the URL
    ("image", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/never-fetched.png"}}]}]}),
]:
    try:
        b.add(line(key, endpoint, body))
        errors[key] = None
    except LineError as e:
        errors[key] = [e.status, e.message, e.code]
assert not b.has_unfinished()
b.close()
print(json.dumps(errors))
""",
    )
    for key, err in res.items():
        assert err is not None and err[0] == 400 and err[1], key
    assert res["embed-on-gen"][2] == "model_endpoint_mismatch"  # the same code as validation's
    assert res["image"][2] == "model_not_multimodal" and "has no vision" in res["image"][1]


def test_a_turns_lines_reach_vllm_together_at_the_next_step(tiny: str) -> None:
    """add() prepares and tracks a line; vLLM gets the turn's lines back to back at the next step()
    (one chain of ZMQ wakeups, not one per line: #16). A line aborted before that step never reaches
    vLLM, and one vLLM's input processor refuses comes back from step() as its 400 row."""
    res = _child(
        tiny,
        """
b = make(PATH)
sent = []
add_request = b._engine.add_request
def counting(request_id, *args, **kwargs):
    sent.append(request_id)
    return add_request(request_id, *args, **kwargs)
b._engine.add_request = counting
for i in range(6):
    b.add(line(f"b:{i}", "/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "ignore_eos": True}))
refused = None
try:
    b.add(line("b:oov", "/v1/completions", {"model": "tiny", "prompt": [10 ** 7], "max_tokens": 4}))
except LineError as e:
    refused = ["add", e.status, e.message]
before = len(sent)
b.abort(["b:0", "b:1"])
done = {}
while b.has_unfinished():
    for r in b.step():
        done[r.key] = [r.status_code, (r.body.get("error") or {}).get("message")]
assert not b._engine.has_unfinished_requests()
b.close()
print(json.dumps({"before": before, "sent": len(sent), "done": done, "refused": refused}))
""",
    )
    assert res["before"] == 0, "a line reached vLLM before the step"
    assert sorted(res["done"]) == ["b:2", "b:3", "b:4", "b:5", "b:oov"], res["done"]
    assert all(res["done"][f"b:{i}"][0] == 200 for i in range(2, 6))
    assert res["refused"] is None, "refused while preparing: this line no longer tests the step's refusal"
    assert res["done"]["b:oov"][0] == 400 and res["done"]["b:oov"][1], res["done"]["b:oov"]
    assert res["sent"] == 5  # the aborted lines were never sent (the refused one was)


def test_cancel_mid_run(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH)
for i in range(40):
    b.add(line(f"b:{i}", "/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 200,
                                             "ignore_eos": True}))
done = {}
for _ in range(5):
    for r in b.step():
        done[r.key] = r
cancelled = [f"b:{i}" for i in range(0, 40, 2) if f"b:{i}" not in done]
b.abort(cancelled)
while b.has_unfinished():
    for r in b.step():
        assert r.key not in done
        done[r.key] = r
assert not b._engine.has_unfinished_requests()
b.close()
print(json.dumps({"cancelled": cancelled, "done": sorted(done)}))
""",
    )
    assert res["cancelled"], "nothing was in flight to cancel"
    assert not set(res["cancelled"]) & set(res["done"])
    assert len(res["cancelled"]) + len(res["done"]) == 40


def test_embeddings_as_pooling_model(tiny: str) -> None:
    res = _child(
        tiny,
        """
b = make(PATH, task="embed", convert="embed")
r = run(b, [line("e:1", "/v1/embeddings", {"model": "tiny", "input": ["Hello world", "The quick fox"]}),
            line("e:2", "/v1/embeddings", {"model": "tiny", "input": [5, 6, 7], "encoding_format": "base64"})])
b.close()
print(json.dumps({k: v.body for k, v in r.items()}))
""",
    )
    one = res["e:1"]
    assert one["object"] == "list" and [d["index"] for d in one["data"]] == [0, 1]
    assert len(one["data"][0]["embedding"]) == 256 and one["usage"]["prompt_tokens"] > 0
    assert isinstance(res["e:2"]["data"][0]["embedding"], str) and res["e:2"]["usage"]["prompt_tokens"] == 3


def test_model_switch_returns_memory(tiny: str) -> None:
    """close() gives the memory back (GPU memory on CUDA, host memory on the CPU) and leaves no
    vLLM process behind, so a switch to the next model starts from where the first began."""
    res = _child(
        tiny,
        """
import gc, time
free0 = free_memory()
gen = make(PATH)
free_loaded, kids_loaded = free_memory(), vllm_processes()
run(gen, [line("b:1", "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 4})])
gen.close(); del gen; gc.collect(); time.sleep(1)
free_after_gen, kids_after_gen = free_memory(), vllm_processes()
gen2 = make(PATH, max_model_len=256)  # a second generation model in the same slot
run(gen2, [line("b:2", "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 4})])
gen2.close(); del gen2; gc.collect(); time.sleep(1)
free_after_gen2, kids_after_gen2 = free_memory(), vllm_processes()
emb = make(PATH, task="embed", convert="embed")
r = run(emb, [line("e:1", "/v1/embeddings", {"model": "tiny", "input": "Hello"})])
emb.close(); del emb; gc.collect(); time.sleep(1)
free_after_emb, kids_after_emb = free_memory(), vllm_processes()
print(json.dumps({"free0": free0, "loaded": free_loaded, "after_gen": free_after_gen, "after_emb": free_after_emb,
                  "after_gen2": free_after_gen2, "kids_loaded": kids_loaded,
                  "kids_after": kids_after_gen + kids_after_gen2 + kids_after_emb,
                  "emb_status": r["e:1"].status_code}))
""",
    )
    mib = 1 << 20
    assert res["free0"] - res["loaded"] > 100 * mib, f"the engine took no memory: {res}"
    assert res["after_gen"] > res["free0"] - 1024 * mib, res
    assert res["after_gen2"] > res["free0"] - 1024 * mib, res
    assert res["after_emb"] > res["free0"] - 1024 * mib, res
    assert res["emb_status"] == 200
    if DEVICE == "cpu":
        assert res["kids_loaded"], "vLLM ran no EngineCore process"  # V1 runs it in a child
    assert res["kids_after"] == [], f"vLLM processes left after close(): {res['kids_after']}"


@pytest.mark.skipif(DEVICE != "cuda", reason="sleep mode frees accelerator memory; not checked on the CPU")
def test_sleep_and_wake(tiny: str) -> None:
    res = _child(
        tiny,
        """
import torch
b = make(PATH, enable_sleep_mode=True)
body = {"model": "tiny", "prompt": "Hi", "max_tokens": 4, "ignore_eos": True}
run(b, [line("b:1", "/v1/completions", body)])
awake, _ = torch.cuda.mem_get_info()
b.sleep(1)
asleep, _ = torch.cuda.mem_get_info()
b.wake_up()
r = run(b, [line("b:2", "/v1/completions", body)])
b.close()
print(json.dumps({"awake": awake, "asleep": asleep, "after": r["b:2"].usage.completion_tokens}))
""",
    )
    assert res["asleep"] > res["awake"], "sleep freed no GPU memory"
    assert res["after"] == 4
