"""VllmBackend: LineRequests -> vLLM engine requests; finished RequestOutputs -> LineResults.

The only module of runner that imports vllm, and only inside functions, so importing this module
is free on machines without vllm (tests/test_vllm_convert.py checks it). Written against the vLLM
0.26.0 wheel's source (paths inside site-packages/vllm/), checked against 0.33.0 for moved names:
- vllm/entrypoints/llm.py: `LLM(model, *, runner, ..., **EngineArgs)` builds `LLMEngine` with
  UsageContext.LLM_CLASS, so the throughput batch defaults (max_num_seqs, max_num_batched_tokens)
  apply; `LLM.sleep(level, mode)` / `LLM.wake_up(tags)`.
- vllm/v1/engine/llm_engine.py: `add_request(request_id, prompt, params, ..., priority)`,
  `step()`, `abort_request(request_ids, internal=False)`, `has_unfinished_requests()`,
  `engine_core.shutdown()`. `step()` blocks in `get_output()` when nothing is in flight, and the
  sync engine yields no output for an aborted request.
- vllm/entrypoints/offline_utils.py::_add_request: `output_kind = FINAL_ONLY` for SamplingParams.
- vllm/entrypoints/openai/chat_completion/serving.py::_create_chat_completion and
  completion/serving.py::_create_completion: get_max_tokens(...) then `to_sampling_params(max_tokens,
  default_sampling_params)`; `override_max_tokens` as computed in their __init__.
- vllm/renderers/online_renderer.py::preprocess_chat / preprocess_cmpl and
  vllm/renderers/base.py::render_chat / render_cmpl: `build_chat_params` + `build_tok_params`
  then the renderer; chats are tokenized with the request's `add_special_tokens` (False by
  default), which avoids the double BOS of re-tokenizing a templated string.
- vllm/entrypoints/pooling/base/io_processor.py and pooling/embed/io_processor.py: embeddings are
  rendered the same way with `to_pooling_params()` (task="embed").
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable
from typing import Any

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.content_parts import check_text_only
from runner.engine.vllm_convert import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    ChatOptions,
    CompletionOptions,
    LineTracker,
    PendingLine,
    chat_body,
    completion_body,
    embedding_body,
    error_result,
    format_validation_errors,
    random_id,
)
from runner.engine.vllm_platform import cpu_defaults, vllm_device
from runner.errors import MESSAGE_LIMIT, ConfigError, EngineDead, LineError, clip, endpoint_mismatch
from runner.model_specs import ModelSpec

logger = logging.getLogger(__name__)

# (line, engine inputs, engine params, priority) for one input line
_Prepared = tuple[PendingLine, list[Any], list[Any], int]

# Keys of models.yaml `engine_args` that are the backend's, not vLLM's.
_OWN_ARGS = ("sleep_level",)


def _import_first(*candidates: tuple[str, str]) -> Any:
    """The first importable `module:name` (names move between vLLM releases)."""
    import importlib

    last: Exception | None = None
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            last = exc
    raise ImportError(f"none of {candidates} importable from this vllm: {last}")


class _Api:
    """The vLLM names this backend uses, resolved once (0.26 paths first)."""

    def __init__(self) -> None:
        self.ChatCompletionRequest = _import_first(
            ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest"),
            ("vllm.entrypoints.openai.protocol", "ChatCompletionRequest"),
        )
        self.CompletionRequest = _import_first(
            ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
            ("vllm.entrypoints.openai.protocol", "CompletionRequest"),
        )
        self.EmbeddingRequest = _import_first(
            ("vllm.entrypoints.pooling.embed.protocol", "EmbeddingRequest"),
            ("vllm.entrypoints.openai.protocol", "EmbeddingRequest"),
        )
        self.get_max_tokens = _import_first(
            ("vllm.entrypoints.serve.utils.api_utils", "get_max_tokens"),
            ("vllm.entrypoints.utils", "get_max_tokens"),
        )
        self.parse_model_prompt = _import_first(("vllm.renderers.inputs.preprocess", "parse_model_prompt"))
        self.prompt_to_seq = _import_first(("vllm.renderers.inputs.preprocess", "prompt_to_seq"))
        self.extract_prompt_len = _import_first(("vllm.renderers.inputs.preprocess", "extract_prompt_len"))
        self.merge_kwargs = _import_first(("vllm.renderers", "merge_kwargs"))
        self.EngineDeadError = _import_first(("vllm.v1.engine.exceptions", "EngineDeadError"))
        try:
            self.is_mistral_tokenizer = _import_first(("vllm.utils.mistral", "is_mistral_tokenizer"))
        except ImportError:
            self.is_mistral_tokenizer = lambda _tok: False
        try:
            self.encode_base64 = _import_first(("vllm.entrypoints.pooling.utils", "encode_pooling_output_base64"))
        except ImportError:
            self.encode_base64 = None

        self._responses_request: Any = False  # resolved on first use: None where this vLLM has none

        from pydantic import TypeAdapter, ValidationError
        from vllm.sampling_params import RequestOutputKind

        self.ValidationError = ValidationError
        self.embedding_adapter = TypeAdapter(self.EmbeddingRequest)
        self.FINAL_ONLY = RequestOutputKind.FINAL_ONLY


    def responses_request(self) -> Any:
        """vLLM's ResponsesRequest (0.32: entrypoints/openai/responses/protocol.py), or None."""
        if self._responses_request is False:
            try:
                self._responses_request = _import_first(
                    ("vllm.entrypoints.openai.responses.protocol", "ResponsesRequest"),
                    ("vllm.entrypoints.openai.protocol", "ResponsesRequest"),
                )
            except ImportError as exc:  # any import failure inside that module counts: none to use
                logger.warning("vllm has no usable ResponsesRequest (%s); runner's checks alone apply", exc)
                self._responses_request = None
        return self._responses_request


# engine_args keys of the transformers backend, which vLLM does not know
_TRANSFORMERS_ARGS = ("batch_size", "embed_batch_size", "step_seconds", "refill", "device", "max_inflight")


def _engine_args(spec: ModelSpec, llm_cls: Any) -> dict[str, Any]:
    """models.yaml engine_args as LLM() takes them. Under `backend: auto` a key vLLM does not know
    (one meant for the transformers backend) is dropped with a warning, as the transformers backend
    drops vLLM's; under `backend: vllm` it is a ConfigError naming it, not a TypeError at load."""
    import dataclasses
    import inspect

    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    known |= {n for n, p in inspect.signature(llm_cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY
              or p.kind is p.POSITIONAL_OR_KEYWORD}
    args = {k: v for k, v in spec.engine_args.items() if k not in _OWN_ARGS}
    unknown = sorted(set(args) - known)
    if unknown and spec.backend == "auto":
        logger.warning("vllm backend ignores engine_args model=%s keys=%s", spec.id, ",".join(unknown))
        args = {k: v for k, v in args.items() if k in known}
    elif unknown:
        hint = " (transformers backend keys)" if set(unknown) <= set(_TRANSFORMERS_ARGS) else ""
        raise ConfigError(f"model {spec.id!r}: engine_args {', '.join(unknown)} are not vLLM engine arguments"
                          f"{hint}")
    return args


def _model_location(spec: ModelSpec, settings: Any) -> str:
    """A local folder when one can be had offline (local path, .gguf converted once, the HF cache,
    or a model packaged on PyPI); else the path as written, for vLLM to download where it can."""
    from runner.engine.model_files import resolve_model_path

    try:
        return str(resolve_model_path(spec, settings))
    except ConfigError:
        assert spec.path is not None
        return spec.path


class VllmBackend(Backend):
    """One model in vLLM's offline engine, driven step by step (continuous batching)."""

    def __init__(self, spec: ModelSpec, settings: Any) -> None:
        if not spec.path:
            raise ConfigError(f"model {spec.id!r}: backend vllm needs a 'path'")
        from vllm import LLM

        self.spec = spec
        self.settings = settings
        self._api = _Api()
        args = _engine_args(spec, LLM)
        args.setdefault("runner", "pooling" if spec.task == "embed" else "generate")
        # vLLM's Prometheus stat logger fills the `vllm:` series GET /metrics passes on (engine/stats.py);
        # LLM() turns it off by default. models.yaml's engine_args may still say otherwise.
        args.setdefault("disable_log_stats", not getattr(settings, "vllm_metrics", False))
        if vllm_device() == "cpu":
            chosen = cpu_defaults(
                args, os.environ,
                kv_cache_gib=float(getattr(settings, "vllm_cpu_kv_cache_gib", 0.0) or 0.0),
                reserved_cpus=int(getattr(settings, "vllm_cpu_reserved_cpus", -1)),
            )
            args.update(chosen.args)
            # read by vLLM when it starts its CPU workers, which inherit this process's environment
            os.environ.update(chosen.env)
            for note in chosen.notes:
                logger.info("vllm cpu default model=%s %s", spec.id, note)
        self._sleep_level = int(spec.engine_args.get("sleep_level", 1))
        self._sleep_mode = bool(args.get("enable_sleep_mode", False))
        model = _model_location(spec, settings)
        logger.info("vllm loading model=%s path=%s args=%s", spec.id, model, args)
        self._llm: Any = LLM(model=model, **args)
        self._engine: Any = self._llm.llm_engine
        self._model_config: Any = self._engine.model_config
        self._renderer: Any = self._engine.renderer
        # LLM(chat_template=...) from engine_args, loaded by vLLM's load_chat_template; None = the
        # tokenizer's own template, as `vllm serve` without --chat-template.
        self._chat_template: str | None = getattr(self._llm, "chat_template", None)
        self._tracker = LineTracker()
        # lines prepared by add() and not yet given to vLLM: key, request ids, inputs, params, priority
        self._to_send: list[tuple[str, list[str], list[Any], list[Any], int]] = []
        self._sleeping = False
        self._closed = False
        max_num_seqs = int(self._engine.vllm_config.scheduler_config.max_num_seqs)
        self.default_max_inflight = max(2 * max_num_seqs, 1)
        if spec.task == "generate":
            # serving.py __init__: the generation-config defaults vllm serve applies
            self._default_sampling: dict[str, Any] = self._model_config.get_diff_sampling_param()
            mc = self._model_config
            self._override_max_tokens = (
                self._default_sampling.get("max_tokens")
                if mc.generation_config not in ("auto", "vllm")
                else (getattr(mc, "override_generation_config", None) or {}).get("max_new_tokens")
            )
        else:
            self._default_sampling = {}
            self._override_max_tokens = None
        logger.info(
            "vllm ready model=%s max_num_seqs=%d max_inflight=%d",
            spec.id,
            max_num_seqs,
            self.default_max_inflight,
        )

    # -- the seam ---------------------------------------------------------------------------

    def add(self, req: LineRequest) -> None:
        if self._closed:
            raise LineError("the model was unloaded", status=503, code="model_not_loaded")
        if req.key in self._tracker:
            raise LineError(f"line {req.key} is already in flight", status=409)
        try:
            if req.endpoint == CHAT:
                line, inputs, params, priority = self._prepare_chat(req)
            elif req.endpoint == COMPLETIONS:
                line, inputs, params, priority = self._prepare_completion(req)
            elif req.endpoint == EMBEDDINGS:
                line, inputs, params, priority = self._prepare_embedding(req)
            else:
                raise LineError(f"endpoint {req.endpoint} is not served by this backend", status=404)
        except LineError:
            raise
        except self._api.ValidationError as exc:
            raise LineError(format_validation_errors(exc.errors())) from exc
        except self._api.EngineDeadError as exc:
            raise EngineDead(str(exc)) from exc
        except Exception as exc:  # jinja2 template errors, VLLMValidationError, prompt too long...
            raise LineError(_message(exc), param=_param(exc)) from exc
        self._submit(line, inputs, params, priority)

    def step(self) -> list[LineResult]:
        failed = self._send_queued() if self._to_send else []
        if not self._engine.has_unfinished_requests():
            # Nothing in the engine but lines still tracked would be a bug; never block in step().
            lost = self._tracker.keys()
            self._tracker.forget(lost)
            return failed + [error_result(k, 500, "the engine lost this request; retry it", "engine_error")
                             for k in lost]
        try:
            outputs = self._engine.step()
        except self._api.EngineDeadError as exc:
            raise EngineDead(f"vLLM engine died: {exc}") from exc
        return failed + self._tracker.on_outputs(outputs)

    def abort(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        unsent: set[str] = set()
        if self._to_send:  # lines vLLM never got: dropped here, nothing to abort there
            gone = set(keys)
            unsent = {rid for key, ids, *_ in self._to_send if key in gone for rid in ids}
            self._to_send = [q for q in self._to_send if q[0] not in gone]
        ids = [rid for rid in self._tracker.forget(keys) if rid not in unsent]
        if ids:
            self._engine.abort_request(ids)

    def has_unfinished(self) -> bool:
        return len(self._tracker) > 0

    def close(self) -> None:
        """Shut the EngineCore process down and give its GPU memory back."""
        if self._closed:
            return
        self._closed = True
        self._to_send = []
        self._tracker.forget(self._tracker.keys())
        engine = getattr(self, "_engine", None)
        try:
            if engine is not None:
                engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - a dead core is already shut down
            logger.exception("[shutdown] vllm engine core shutdown failed model=%s", self.spec.id)
        try:
            if engine is not None:
                engine.renderer.shutdown()
        except Exception:  # noqa: BLE001
            logger.debug("[shutdown] renderer shutdown failed", exc_info=True)
        self._engine = None
        self._llm = None
        self._renderer = None
        engine = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            logger.debug("[shutdown] torch.cuda.empty_cache failed", exc_info=True)
        logger.info("[shutdown] vllm model unloaded model=%s", self.spec.id)

    # -- /v1/responses (engine/responses_api.py runs the line as a chat completion) -----------

    def check_responses_body(self, body: Any) -> None:
        """LineError for a Responses body that vLLM's own ResponsesRequest refuses, with vLLM's
        message, so a line `vllm serve` would refuse is refused here too. A vLLM without that model
        (it moved between releases) leaves the checks to runner's conversion alone."""
        request_cls = self._api.responses_request()
        if request_cls is None:
            return
        try:
            request = request_cls.model_validate(body)
            request.extract_structured_outputs()  # "Cannot specify both structured_outputs and text.format"
        except self._api.ValidationError as exc:
            raise LineError(_validation_message(exc.errors())) from exc
        except Exception as exc:  # VLLMValidationError from its model validators
            message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else _message(exc)
            raise LineError(_message_text(message), param=_param(exc)) from exc

    # -- sleep mode (engine_args: enable_sleep_mode: true) ----------------------------------

    @property
    def can_sleep(self) -> bool:
        return self._sleep_mode and not self._closed

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def sleep(self, level: int | None = None) -> None:
        """Free the GPU (level 1: weights to host RAM, KV cache dropped; level 2: both dropped).

        Only with no line in flight: the engine drains or aborts first."""
        if not self._sleep_mode:
            raise RuntimeError(f"model {self.spec.id}: sleep needs engine_args.enable_sleep_mode")
        if self._tracker:
            raise RuntimeError("cannot sleep with lines in flight")
        if self._sleeping:
            return
        self._llm.sleep(level=level or self._sleep_level)
        self._slept_level = level or self._sleep_level
        self._sleeping = True

    def wake_up(self) -> None:
        if not self._sleeping:
            return
        self._llm.wake_up()
        if getattr(self, "_slept_level", 1) >= 2:
            # level 2 dropped the weights: reload them from the checkpoint (LLM.sleep docstring)
            self._llm.collective_rpc("reload_weights")
        self._sleeping = False

    # -- request conversion -----------------------------------------------------------------

    def _submit(self, line: PendingLine, inputs: list[Any], params: list[Any], priority: int) -> None:
        """Track the line now; hand its requests to vLLM at the next step(), with the others of this turn.

        Each add_request is a message to the EngineCore process, and each message a chain of wakeups
        (this process's ZMQ thread, the EngineCore's ZMQ and input threads). Sent one by one between
        request preparations, every line paid that chain while vLLM computed; on a small CPU box
        each wakeup stalls its spinning OpenMP workers (#16). Sent back to back, the chain carries
        the whole turn's lines at once, as LLM.generate sends its list."""
        ids = self._tracker.add(line)
        self._to_send.append((line.key, ids, inputs, params, priority))

    def _send_queued(self) -> list[LineResult]:
        """add_request for every line queued since the last step; a row for each vLLM refused."""
        queued, self._to_send = self._to_send, []
        failed: list[LineResult] = []
        for key, ids, inputs, params, priority in queued:
            if key not in self._tracker:
                continue  # aborted before it was sent
            added: list[str] = []
            try:
                for rid, engine_input, p in zip(ids, inputs, params, strict=True):
                    self._engine.add_request(rid, engine_input, p, priority=priority)
                    added.append(rid)
            except self._api.EngineDeadError as exc:
                raise EngineDead(str(exc)) from exc
            except Exception as exc:  # the input processor's checks: a 400 row, as add() would have raised
                self._tracker.forget([key])
                if added:
                    self._engine.abort_request(added)
                error = LineError(_message(exc))
                failed.append(LineResult(key, error.status, error.body()))
        return failed

    def _model_name(self, body: dict[str, Any]) -> str:
        return str(body.get("model") or self.spec.id)

    def _decode(self, token_id: int) -> str:
        return str(self._engine.get_tokenizer().decode([token_id]))

    def _require(self, task: str, endpoint: str) -> None:
        if self.spec.task != task:
            raise endpoint_mismatch(self.spec.id, endpoint, self.spec.endpoints)

    def _batch_body(self, body: dict[str, Any]) -> dict[str, Any]:
        # A batch line has no stream to write to: run it as a non-streaming request.
        clean = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        return clean

    def _max_tokens(self, requested: int | None, engine_input: Any, truncate: int | None) -> int:
        """get_max_tokens as vllm serve calls it, with the models.yaml cap when the body omits it."""
        if requested is None:
            requested = self.spec.max_tokens
            default_max = self._default_sampling.get("max_tokens")
            if default_max is not None:
                requested = min(requested, int(default_max))
        return int(
            self._api.get_max_tokens(
                self._model_config.max_model_len,
                requested,
                self._api.extract_prompt_len(self._model_config, engine_input),
                self._default_sampling,
                self._override_max_tokens,
                truncate_prompt_tokens=truncate,
            )
        )

    def _prepare_chat(self, req: LineRequest) -> _Prepared:
        self._require("generate", CHAT)
        body = self._batch_body(req.body)
        if not getattr(self._model_config, "is_multimodal_model", False):
            check_text_only(self.spec.id, body.get("messages"))  # before vLLM's parser fetches any URL
        request = self._api.ChatCompletionRequest.model_validate(body)
        if request.use_beam_search:
            raise LineError("use_beam_search is not supported in batches", param="use_beam_search")
        if request.tool_choice not in (None, "none"):
            raise LineError(
                "tool_choice other than 'none' needs a tool parser, which runner does not run", param="tool_choice"
            )
        if request.chat_template is not None or (request.chat_template_kwargs or {}).get("chat_template"):
            raise LineError(
                "a chat template in the request is not trusted (vllm serve refuses it too)", param="chat_template"
            )
        tok = self._renderer.tokenizer
        tool_dicts = None if request.tools is None else [t.model_dump() for t in request.tools]
        defaults = self._api.merge_kwargs(
            None,
            dict(
                tools=tool_dicts,
                tokenize=self._api.is_mistral_tokenizer(tok) or bool(self._model_config.enable_prompt_embeds),
            ),
        )
        mm_config = self._model_config.multimodal_config
        chat_params = request.build_chat_params(self._chat_template, "auto").with_defaults(
            defaults,
            default_media_io_kwargs=(mm_config.media_io_kwargs if mm_config else None),
            default_mm_processor_kwargs=getattr(request, "mm_processor_kwargs", None),
        )
        tok_params = request.build_tok_params(self._model_config)
        (_conv,), (engine_input,) = self._renderer.render_chat(
            [request.messages], chat_params, tok_params, prompt_extras=_prompt_extras(request)
        )
        requested = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        max_tokens = self._max_tokens(requested, engine_input, request.truncate_prompt_tokens)
        params = request.to_sampling_params(max_tokens, self._default_sampling)
        params.output_kind = self._api.FINAL_ONLY
        opts = ChatOptions.from_request(request)
        model = self._model_name(body)
        decode = self._decode

        def build(outs: list[Any]) -> dict[str, Any]:
            return chat_body(outs[0], opts, model=model, decode=decode, request_id=random_id("chatcmpl"))

        return PendingLine(req.key, CHAT, model, 1, build), [engine_input], [params], request.priority

    def _prepare_completion(self, req: LineRequest) -> _Prepared:
        self._require("generate", COMPLETIONS)
        body = self._batch_body(req.body)
        omitted = body.get("max_tokens") is None
        request = self._api.CompletionRequest.model_validate(body)
        if request.use_beam_search:
            raise LineError("use_beam_search is not supported in batches", param="use_beam_search")
        if request.suffix is not None:
            raise LineError("suffix is not currently supported", param="suffix")
        if request.prompt_embeds is not None:
            raise LineError("prompt_embeds is not supported in batches", param="prompt_embeds")
        if request.prompt is None:
            raise LineError("prompt is required", param="prompt")
        prompts = list(self._api.prompt_to_seq(request.prompt))
        if not prompts:
            raise LineError("prompt must not be empty", param="prompt")
        parsed = [self._api.parse_model_prompt(self._model_config, p) for p in prompts]
        tok_params = request.build_tok_params(self._model_config)
        engine_inputs = list(self._renderer.render_cmpl(parsed, tok_params, prompt_extras=_prompt_extras(request)))
        # CompletionRequest defaults max_tokens to 16 (as OpenAI); models.yaml may only lower that.
        requested = request.max_tokens
        if omitted:
            requested = min(int(requested or 16), self.spec.max_tokens)
        params = []
        for engine_input in engine_inputs:
            max_tokens = self._max_tokens(requested, engine_input, request.truncate_prompt_tokens)
            p = request.to_sampling_params(max_tokens, self._default_sampling)
            p.output_kind = self._api.FINAL_ONLY
            params.append(p)
        opts = CompletionOptions.from_request(request)
        texts = [p if isinstance(p, str) else None for p in prompts]
        model = self._model_name(body)
        decode = self._decode

        def build(outs: list[Any]) -> dict[str, Any]:
            return completion_body(
                outs, opts, model=model, decode=decode, prompt_texts=texts, request_id=random_id("cmpl")
            )

        line = PendingLine(req.key, COMPLETIONS, model, len(engine_inputs), build)
        return line, engine_inputs, params, request.priority

    def _prepare_embedding(self, req: LineRequest) -> _Prepared:
        self._require("embed", EMBEDDINGS)
        body = self._batch_body(req.body)
        request = self._api.embedding_adapter.validate_python(body)
        fmt = getattr(request, "encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise LineError(f"encoding_format {clip(fmt, quote=True)} cannot go into a JSON batch row",
                            param="encoding_format")
        tok_params = request.build_tok_params(self._model_config)
        if hasattr(request, "messages"):
            messages = request.messages
            conversations = messages if messages and isinstance(messages[0], list) else [messages]
            chat_params = request.build_chat_params(self._chat_template, "auto").with_defaults(
                self._api.merge_kwargs(
                    None, dict(tools=None, tokenize=self._api.is_mistral_tokenizer(self._renderer.tokenizer))
                )
            )
            _, engine_inputs = self._renderer.render_chat(
                conversations, chat_params, tok_params, prompt_extras=_prompt_extras(request)
            )
        else:
            prompts = list(self._api.prompt_to_seq(request.input))
            if not prompts:
                raise LineError("input must not be empty", param="input")
            parsed = [self._api.parse_model_prompt(self._model_config, p) for p in prompts]
            engine_inputs = self._renderer.render_cmpl(parsed, tok_params, prompt_extras=_prompt_extras(request))
        engine_inputs = list(engine_inputs)
        params = []
        for _ in engine_inputs:
            params.append(request.to_pooling_params())
        model = self._model_name(body)
        encode = self._embedding_encoder(request)

        def build(outs: list[Any]) -> dict[str, Any]:
            return embedding_body(
                [encode(o) for o in outs],
                [len(o.prompt_token_ids or []) for o in outs],
                model=model,
                request_id=random_id("embd"),
            )

        line = PendingLine(req.key, EMBEDDINGS, model, len(engine_inputs), build)
        return line, engine_inputs, params, request.priority

    def _embedding_encoder(self, request: Any) -> Any:
        if getattr(request, "encoding_format", "float") == "float":
            return lambda out: out.outputs.data.tolist()
        embed_dtype = getattr(request, "embed_dtype", "float32")
        endianness = getattr(request, "endianness", "native")
        encode_base64 = self._api.encode_base64
        if encode_base64 is None:
            raise LineError("encoding_format base64 is not available with this vllm", param="encoding_format")
        return lambda out: encode_base64(out, embed_dtype, endianness)


def _prompt_extras(request: Any) -> dict[str, Any]:
    # online_renderer.py: prompt_extras={k: v for k in ("mm_processor_kwargs", "cache_salt") ...}
    return {k: v for k in ("mm_processor_kwargs", "cache_salt") if (v := getattr(request, k, None)) is not None}


def _message(exc: BaseException) -> str:
    return _message_text(str(exc).strip() or type(exc).__name__)


def _message_text(text: str) -> str:
    # vLLM's messages may quote the request (a template error, a pydantic input): bounded
    return clip(text, MESSAGE_LIMIT)


def _validation_message(errors: list[dict[str, Any]], limit: int = 3) -> str:
    """pydantic errors of a ResponsesRequest -> one short line. Its input items are a union of
    some thirty SDK types, so each loc carries type names ("list[function-before[...]]",
    "EasyInputMessageParam") and one bad item gives dozens of errors: the names are dropped and
    the first few distinct ones kept."""
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ())
                       if not (isinstance(x, str) and ("[" in x or x[:1].isupper()))) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    unique = list(dict.fromkeys(parts))
    text = "; ".join(unique[:limit])
    if len(unique) > limit:
        text += f"; and {len(unique) - limit} more"
    return _message_text(text or "invalid request body")


def _param(exc: BaseException) -> str | None:
    # vllm/exceptions.py::VLLMValidationError carries the offending parameter's name
    param = getattr(exc, "parameter", None)
    return str(param) if param is not None else None
