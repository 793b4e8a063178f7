"""Structured output for the transformers backend: `response_format` -> a per-token mask.

`response_format` {"type": "json_schema", "json_schema": {"schema": ...}} constrains a line's text
to JSON that the schema accepts; {"type": "json_object"} to any JSON object (the schema
{"type": "object"}, as vLLM compiles it). The grammar engine is llguidance (the version vLLM pins,
one of vLLM's own structured-output backends), chosen by benchmarks/bench_grammar.py: on SmolLM2's
49,152-token vocabulary it compiles every schema measured in under a millisecond and costs tens of
microseconds per token, is one 3 MB wheel with no dependencies, and bounds its own work (lexer
fuel, grammar size), so a hostile schema gets an error instead of a hung engine. xgrammar masks
faster but took up to ~0.4 s to compile a schema with `pattern`/`format` and pulls in triton and
apache-tvm-ffi; outlines_core took seconds to compile {"type": "object"}.

Whitespace between JSON tokens is free, as in vLLM's default (whitespace_flexible), and extra
object properties are allowed unless the schema says `additionalProperties: false`, also as vLLM.

Cost: nothing for a row without `response_format` (the backend checks `row.grammar is None`). A
row with one pays the mask (computed by llguidance into a bitmask, unpacked and applied with numpy)
and one `consume_token` per generated token.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from runner.errors import LineError, clip

# Bounds on llguidance's work per line: its defaults, stated here so they are ours to change.
# verbose_errors=False: an error names the problem, not the parser's state or the whole grammar.
_LIMITS = {"verbose_errors": False}
_MAX_ERROR = 200  # characters of a library message quoted back to the client


_SCHEMA = "response_format.json_schema.schema"


def _quote(text: str) -> str:
    """A library message made safe to return: one line, bounded (it may quote the schema)."""
    return clip(" ".join(str(text).split()), _MAX_ERROR)


def schema_of(response_format: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema a `response_format` asks for (json_object: any object). LineError 400 when
    it names no usable schema or a type this backend does not constrain."""
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise LineError(f"response_format type {clip(kind, quote=True)} is not supported by the transformers "
                        "backend (json_schema and json_object are).", status=400, code="unsupported_parameter",
                        param="response_format.type")
    spec = response_format.get("json_schema")
    if spec is None:
        raise LineError("'response_format.json_schema' is required when type is json_schema.", status=400,
                        code="missing_required_parameter", param="response_format.json_schema")
    if not isinstance(spec, dict):
        raise LineError("'response_format.json_schema' must be an object with a 'schema'.", status=400,
                        code="invalid_value", param="response_format.json_schema")
    schema = spec.get("schema")
    if schema is None:
        raise LineError(f"'{_SCHEMA}' is required.", status=400, code="missing_required_parameter", param=_SCHEMA)
    if not isinstance(schema, dict):
        raise LineError(f"'{_SCHEMA}' must be a JSON schema (an object).", status=400, code="invalid_value",
                        param=_SCHEMA)
    return schema


def _invalid(error: str) -> LineError:
    """The 400 for a schema llguidance refused: a keyword it does not implement is a schema this
    backend cannot honour (unsupported_parameter, as on the simulated backend); anything else is an
    invalid schema (a bad type, $ref, regex or a resource limit hit)."""
    if error.startswith("Unimplemented keys"):
        return LineError(f"The JSON schema in response_format uses keywords the transformers backend cannot "
                         f"enforce: {_quote(error)}", status=400, code="unsupported_parameter", param=_SCHEMA)
    return LineError(f"Invalid JSON schema in response_format: {_quote(error)}", status=400, code="invalid_value",
                     param=_SCHEMA)


class Grammars:
    """One model's grammar compiler: the tokenizer as llguidance sees it (built on first use,
    ~1 s for 49k tokens, then kept) and response_format -> compiled grammar -> row matchers."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int) -> None:
        self._hf = hf_tokenizer
        self.vocab_size = max(int(vocab_size), len(hf_tokenizer))
        self._tok: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            try:
                import llguidance.hf
            except ImportError:  # an install without the cpu extra's pin: say so rather than ignore it
                raise LineError("response_format needs the llguidance package on the transformers backend "
                                "(pip install llguidance==1.7.6).", status=400, code="unsupported_parameter",
                                param="response_format") from None
            try:
                self._tok = llguidance.hf.from_tokenizer(self._hf, self.vocab_size)
            except ValueError as e:  # "Only fast tokenizers are supported": a slow (Python) tokenizer
                raise LineError(f"response_format is not supported for this model on the transformers backend: "
                                f"{_quote(str(e))}", status=400, code="unsupported_parameter",
                                param="response_format") from None
        return self._tok

    def compile(self, response_format: dict[str, Any]) -> str:
        """The llguidance grammar for `response_format`, checked against the tokenizer. LineError 400
        names what is wrong with the schema (bounded); the grammar is shared by a line's rows."""
        schema = schema_of(response_format)
        tokenizer = self.tokenizer  # first: it reports a missing llguidance as a 400
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults={"whitespace_flexible": True})
        except (ValueError, TypeError) as e:
            raise _invalid(str(e)) from None
        error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer, limits=self._limits())
        if error:
            raise _invalid(error)
        return grammar

    def matcher(self, grammar: str) -> RowGrammar:
        """A fresh matcher for one generated sequence (each of n choices walks its own)."""
        import llguidance

        m = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0, limits=self._limits())
        if m.is_error():  # validate_grammar passed, so only a resource limit gets here
            raise _invalid(m.get_error())
        return RowGrammar(m, self.vocab_size)

    @staticmethod
    def _limits() -> Any:
        import llguidance

        return llguidance.LLParserLimits(**_LIMITS)


class RowGrammar:
    """The grammar state of one generated sequence."""

    __slots__ = ("_bits", "matcher", "vocab_size")

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size
        self._bits = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)

    def _fill(self) -> np.ndarray:
        """llguidance's bitmask for the next token, as int32 words (bit i of word w: token 32*w+i)."""
        bits = self._bits
        self.matcher.unsafe_compute_mask_ptr(bits.data_ptr(), bits.numel() * bits.element_size())
        if self.matcher.is_error():
            raise RuntimeError(f"grammar matcher failed: {_quote(self.matcher.get_error())}")
        return bits.numpy()

    def allowed(self) -> torch.Tensor:
        """A bool tensor over the vocabulary: the tokens the grammar allows next (EOS once complete)."""
        flat = np.unpackbits(self._fill().view(np.uint8), bitorder="little")
        return torch.from_numpy(flat[: self.vocab_size].view(np.bool_))

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of every token the grammar forbids to -inf, in place. On CPU through numpy:
        torch's masked_fill over 49k entries took ms, not us, with 2 threads on a busy machine."""
        forbidden = np.unpackbits(np.invert(self._fill()).view(np.uint8), bitorder="little").view(np.bool_)
        n = min(logits.shape[-1], self.vocab_size)
        if logits.shape[-1] > n:  # model rows past the tokenizer's vocabulary are never valid text
            logits[n:] = float("-inf")
        if logits.device.type == "cpu" and logits.is_contiguous():
            np.copyto(logits.numpy()[:n], -np.inf, where=forbidden[:n])
        else:
            logits[:n].masked_fill_(torch.from_numpy(forbidden[:n]).to(logits.device), float("-inf"))

    def accept(self, token: int) -> None:
        """Advance by a token the mask allowed; a refusal is a bug (the mask and matcher disagree)."""
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"grammar refused token {token}: {_quote(self.matcher.get_error())}")

    @property
    def complete(self) -> bool:
        """True once the text is a whole value and nothing more may follow (only EOS is allowed)."""
        return bool(self.matcher.is_stopped())
