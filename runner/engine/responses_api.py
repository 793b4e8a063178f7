"""/v1/responses as a batch endpoint: a Responses body runs as the chat completion it means.

One conversion for every backend (#13). `make_backend` wraps each generate backend in
ResponsesAdapter; a /v1/responses line becomes a chat body on the way in (to_chat) and the chat
answer becomes OpenAI's `response` object on the way out (responses.py::response_object_body).
So a Responses line and the same request sent as a chat completion run the same prompt with the
same sampling, and every check and refusal of the chat path applies, with its `param` renamed to
the Responses field (messages[2].content -> input[1].content, max_completion_tokens ->
max_output_tokens). On vLLM the body first goes through vLLM's own ResponsesRequest
(VllmBackend.check_responses_body), so what `vllm serve` refuses is refused here too, with vLLM's
message.

A batch has no conversation state and no tools runner could call, so everything that needs one is
refused with a 400 naming the field instead of being ignored: store: true, previous_response_id,
conversation, background: true, stored prompts (`prompt`), item_reference items, tools other than
functions, truncation: auto, context_management.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.bodies import CHAT, MAX_LOGPROBS, MAX_TOKENS_LIMIT, _bad
from runner.engine.responses import response_object_body
from runner.errors import LineError, clip, endpoint_mismatch

RESPONSES = "/v1/responses"

# Fields of OpenAI's ResponseCreateParams (openai 3.57) and vLLM 0.32's ResponsesRequest extras.
# Anything else is refused as an unknown argument, as on the chat endpoint (bodies.py).
_OPENAI_FIELDS = {
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "top_logprobs",
    "text", "tools", "tool_choice", "parallel_tool_calls", "max_tool_calls", "reasoning", "include",
    "metadata", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "prompt_cache_options", "service_tier", "store", "stream", "stream_options", "background",
    "background_options", "previous_response_id", "conversation", "prompt", "truncation",
    "context_management", "access_programs", "image", "moderation",
}
# vLLM's sampling extras, passed to the chat body as they are (the chat path checks each one).
_PASS_THROUGH = (
    "seed", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "stop",
    "stop_token_ids", "ignore_eos", "skip_special_tokens", "include_stop_str_in_output", "logit_bias",
    "structured_outputs", "priority", "cache_salt", "chat_template_kwargs", "vllm_xargs",
    "kv_transfer_params", "request_id",
)
_VLLM_FIELDS = set(_PASS_THROUGH) | {"include_reasoning", "enable_response_messages", "mm_processor_kwargs"}
FIELDS = frozenset(_OPENAI_FIELDS | _VLLM_FIELDS)

# Refused: each needs state or tools a batch line does not have. (field, value that is refused or
# None for any value but null, why)
_REFUSED: tuple[tuple[str, Any, str], ...] = (
    ("store", True, "'store': true is not supported in a batch: runner keeps no responses to retrieve "
                    "later. Remove it or set it to false."),
    ("previous_response_id", None, "'previous_response_id' is not supported in a batch: there are no "
                                   "stored responses. Send the whole conversation in 'input'."),
    ("conversation", None, "'conversation' is not supported in a batch: there are no stored "
                           "conversations. Send the whole conversation in 'input'."),
    ("background", True, "'background': true is not supported in a batch (a batch already runs in the "
                         "background)."),
    ("background_options", None, "'background_options' is not supported in a batch."),
    ("prompt", None, "Stored prompts ('prompt') are not supported; send the text in 'input' and "
                     "'instructions'."),
    ("context_management", None, "'context_management' is not supported in a batch."),
    ("access_programs", None, "'access_programs' is not supported in a batch."),
    ("image", None, "'image' is not supported in a batch."),
    ("moderation", None, "'moderation' is not supported in a batch."),
    ("prompt_cache_options", None, "'prompt_cache_options' is not supported in a batch."),
    ("enable_response_messages", True, "'enable_response_messages' is not supported in a batch."),
    ("include_reasoning", False, "'include_reasoning': false is not supported (no reasoning parser runs)."),
)
INCLUDE = frozenset({
    "code_interpreter_call.outputs", "computer_call_output.output.image_url", "file_search_call.results",
    "message.input_image.image_url", "message.output_text.logprobs", "reasoning.encrypted_content",
    "web_search_call.action.sources", "web_search_call.results",
})
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_REASONING_KEYS = {"effort", "summary", "generate_summary", "mode", "context"}
_ITEM_ROLES = ("user", "assistant", "system", "developer")


@dataclass(slots=True)
class ResponsesCall:
    """What the answer echoes of its request, and where each chat message came from."""

    model: str
    body: dict[str, Any]  # the Responses body as sent (echoed fields are read from it)
    # chat message index -> the Responses field it came from ("instructions", "input", "input[3]")
    sources: list[str] = field(default_factory=list)
    want_logprobs: bool = False


def _check_fields(body: Any) -> None:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None, "invalid_body")
    unknown = sorted(body.keys() - FIELDS)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {clip(unknown[0])}", clip(unknown[0]),
                   "unknown_parameter")
    for key, value, why in _REFUSED:
        got = body.get(key)
        if got is None:
            continue
        if value is None or got == value:
            raise _bad(why, key, "unsupported_parameter")


def _text_parts(content: list[Any], where: str, role: str) -> list[dict[str, Any]]:
    """Responses content parts -> chat content parts (same order, so part j keeps its index)."""
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"'{pw}' must be an object with a 'type'.", pw)
        kind = part["type"]
        if kind in ("input_text", "output_text", "text"):
            if kind == "output_text" and role != "assistant":
                raise _bad(f"'{pw}': output_text parts belong to assistant messages.", f"{pw}.type")
            if not isinstance(part.get("text"), str):
                raise _bad(f"'{pw}.text' must be a string.", f"{pw}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and role == "assistant":
            if not isinstance(part.get("refusal"), str):
                raise _bad(f"'{pw}.refusal' must be a string.", f"{pw}.refusal")
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            # handed on as a chat image part: the chat path serves it where the model has vision
            # and refuses it with its own message where it has not
            url = part.get("image_url")
            if not isinstance(url, str):
                what = "file_id images are not supported (no stored files)" if part.get("file_id") else \
                    "'image_url' must be a string"
                raise _bad(f"'{pw}': {what}.", f"{pw}.image_url", "unsupported_parameter"
                           if part.get("file_id") else "invalid_value")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"'{pw}': content type {clip(kind, quote=True)} is not supported (input_text, output_text and "
                       "input_image are).", f"{pw}.type", "unsupported_parameter")
    return parts


def _message_item(i: int, item: dict[str, Any]) -> dict[str, Any]:
    where = f"input[{i}]"
    role = item.get("role")
    if role not in _ITEM_ROLES:
        raise _bad(f"'{where}.role' must be one of {', '.join(_ITEM_ROLES)}, got {clip(role, quote=True)}.",
                   f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if isinstance(content, list):
        return {"role": role, "content": _text_parts(content, where, role)}
    raise _bad(f"'{where}.content' must be a string or a list of content parts.", f"{where}.content")


def _str_field(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (key != "arguments" and not value):
        raise _bad(f"'{where}.{key}' must be a non-empty string.", f"{where}.{key}")
    return value


def _function_output(i: int, item: dict[str, Any]) -> dict[str, Any]:
    where = f"input[{i}]"
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(p.get("text", "") for p in _text_parts(output, where, "user") if p["type"] == "text")
    if not isinstance(output, str):
        raise _bad(f"'{where}.output' must be a string or a list of input_text parts.", f"{where}.output")
    return {"role": "tool", "tool_call_id": _str_field(item, "call_id", where), "content": output}


def _messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """instructions + input -> chat messages, and the Responses field each one came from."""
    messages: list[dict[str, Any]] = []
    sources: list[str] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string.", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
            sources.append("instructions")
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
        sources.append("input")
        return messages, sources
    if not isinstance(value, list) or not value:
        code = "missing_required_parameter" if value is None else "invalid_value"
        raise _bad("'input' must be a string or a non-empty list of input items.", "input", code)
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"'{where}' must be an object.", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message_item(i, item))
            sources.append(where)
        elif kind == "function_call":
            call = {"id": _str_field(item, "call_id", where), "type": "function",
                    "function": {"name": _str_field(item, "name", where),
                                 "arguments": _str_field(item, "arguments", where)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and sources[-1] != "instructions":
                last.setdefault("tool_calls", []).append(call)  # several calls of one turn: one message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                sources.append(where)
        elif kind == "function_call_output":
            messages.append(_function_output(i, item))
            sources.append(where)
        elif kind == "item_reference":
            raise _bad(f"'{where}': item_reference is not supported in a batch (there are no stored items); "
                       "send the item itself.", f"{where}.type", "unsupported_parameter")
        else:
            raise _bad(f"'{where}': input item type {clip(kind, quote=True)} is not supported (message, function_call "
                       "and function_call_output are).", f"{where}.type", "unsupported_parameter")
    return messages, sources


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list.", "tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"'{where}' must be an object.", where)
        if tool.get("type") != "function":
            raise _bad(f"'{where}': tool type {clip(tool.get('type'), quote=True)} is not supported in a batch; only "
                       "function tools are (runner runs no built-in tools).", f"{where}.type",
                       "unsupported_parameter")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"'{where}.name' must be a non-empty string.", f"{where}.name")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out or None


def _tool_choice(body: dict[str, Any]) -> Any:
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return choice  # none | auto | required: the chat path checks the value
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise _bad("'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ...}.",
               "tool_choice", "unsupported_parameter" if isinstance(choice, dict) else "invalid_value")


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict) or not set(text) <= {"format", "verbosity"}:
        raise _bad("'text' must be an object with 'format' (and 'verbosity').", "text")
    verbosity = text.get("verbosity")
    if verbosity not in (None, "medium"):
        raise _bad("'text.verbosity' other than 'medium' is not supported (no model here takes it).",
                   "text.verbosity", "unsupported_parameter")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("'text.format.schema' must be a JSON schema object.", "text.format.schema")
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise _bad("'text.format.name' must be a non-empty string.", "text.format.name")
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("'text.format.type' must be text, json_object or json_schema.", "text.format.type")


def _include(body: dict[str, Any]) -> bool:
    """Checks `include`; True when it asks for the output's logprobs."""
    include = body.get("include")
    if include is None:
        return False
    if not isinstance(include, list) or not all(isinstance(x, str) for x in include):
        raise _bad("'include' must be a list of strings.", "include")
    for j, x in enumerate(include):
        if x not in INCLUDE:
            raise _bad(f"'include[{j}]': {clip(x, quote=True)} is not one of {', '.join(sorted(INCLUDE))}.",
                       f"include[{j}]")
    return "message.output_text.logprobs" in include


def _reasoning(body: dict[str, Any]) -> str | None:
    """Checks `reasoning`; the effort, handed to the chat template as chat's reasoning_effort."""
    reasoning = body.get("reasoning")
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise _bad("'reasoning' must be an object.", "reasoning")
    unknown = sorted(set(reasoning) - _REASONING_KEYS)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: reasoning.{clip(unknown[0])}",
                   f"reasoning.{clip(unknown[0])}", "unknown_parameter")
    effort = reasoning.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _bad(f"'reasoning.effort' must be one of {', '.join(REASONING_EFFORTS)}, got {clip(effort, quote=True)}.",
                   "reasoning.effort")
    return effort if isinstance(effort, str) else None


def to_chat(body: Any, default_model: str) -> tuple[dict[str, Any], ResponsesCall]:
    """A Responses body -> (the chat body that runs it, what the answer needs). LineError if bad."""
    _check_fields(body)
    messages, sources = _messages(body)
    if not messages:
        raise _bad("'input' has no message to answer.", "input")
    model = body.get("model", default_model)
    chat: dict[str, Any] = {"model": model, "messages": messages}
    mot = body.get("max_output_tokens")
    if mot is not None:
        if not isinstance(mot, int) or isinstance(mot, bool):
            raise _bad(f"'max_output_tokens' must be an integer, got {clip(mot, quote=True)}.", "max_output_tokens")
        if not 1 <= mot <= MAX_TOKENS_LIMIT:
            raise _bad(f"'max_output_tokens' must be in [1, {MAX_TOKENS_LIMIT}], got {mot}.", "max_output_tokens")
        chat["max_completion_tokens"] = mot
    for key in ("temperature", "top_p", "user", "metadata", "service_tier", "parallel_tool_calls",
                "prompt_cache_key", "safety_identifier", *_PASS_THROUGH):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]  # false passes; true is refused by the chat path, as on chat
    truncation = body.get("truncation")
    if truncation not in (None, "disabled"):
        raise _bad("'truncation' must be 'disabled' in a batch: runner does not drop input to fit the "
                   "context ('auto').", "truncation", "unsupported_parameter")
    want_logprobs = _include(body)
    top = body.get("top_logprobs")
    if want_logprobs or top:
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_LOGPROBS):
            raise _bad(f"'top_logprobs' must be an integer in [0, {MAX_LOGPROBS}].", "top_logprobs")
        if top and not want_logprobs:
            raise _bad("'top_logprobs' needs 'include': ['message.output_text.logprobs'].", "top_logprobs")
        chat["logprobs"] = True
        if top:
            chat["top_logprobs"] = top
    effort = _reasoning(body)
    if effort is not None:
        chat["reasoning_effort"] = effort
    fmt = _response_format(body)
    if fmt is not None:
        chat["response_format"] = fmt
    tools = _tools(body)
    if tools is not None:
        chat["tools"] = tools
    choice = _tool_choice(body)
    if choice is not None:
        chat["tool_choice"] = choice
    max_tool_calls = body.get("max_tool_calls")
    if max_tool_calls is not None and (not isinstance(max_tool_calls, int) or max_tool_calls < 1):
        raise _bad("'max_tool_calls' must be a positive integer.", "max_tool_calls")
    return chat, ResponsesCall(model=str(model), body=body, sources=sources, want_logprobs=want_logprobs)


# -- errors of the chat path, in Responses terms -----------------------------------------------------

_RENAMED = {
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "logprobs": "include",
    "reasoning_effort": "reasoning.effort",
    "messages": "input",
}


# Chat's response_format {type, json_schema: {name, schema, strict}} is the Responses text.format
# {type, name, schema, strict}: one level flatter, so response_format.json_schema.schema is
# text.format.schema and response_format.json_schema (the wrapper) is text.format itself. Also
# unquoted in a message ("Invalid JSON schema in response_format: ..."): a Responses client never
# sent a response_format.
_FORMAT = re.compile(r"\bresponse_format(?:\.json_schema\b)?")


def _param(param: str, call: ResponsesCall) -> str:
    head, dot, rest = param.partition(".")
    if head.startswith("messages[") and head.endswith("]"):
        try:
            k = int(head[len("messages["):-1])
        except ValueError:
            return param
        source = call.sources[k] if 0 <= k < len(call.sources) else "input"
        if source in ("instructions", "input") or rest.startswith("tool_calls"):
            return source  # a string has no parts of its own; tool calls are the function_call items
        return source + dot + rest
    if head == "response_format":
        return _FORMAT.sub("text.format", param, count=1)
    for old, new in _RENAMED.items():
        if head == old:
            return new + dot + rest
    return param


def _message(message: str, call: ResponsesCall) -> str:
    for k, source in reversed(list(enumerate(call.sources))):  # messages[12] before messages[1]
        message = message.replace(f"messages[{k}]", source)
    for old, new in (*_RENAMED.items(), ("image_url", "input_image")):  # the chat part an input_image became
        message = message.replace(f"'{old}'", f"'{new}'")
    return _FORMAT.sub("text.format", message)


def translate_error(exc: LineError, call: ResponsesCall) -> LineError:
    param = _param(exc.param, call) if exc.param else exc.param
    return LineError(_message(exc.message, call), status=exc.status, code=exc.code, param=param)


def _translate_body(body: dict[str, Any], call: ResponsesCall) -> dict[str, Any]:
    err = body.get("error")
    if not isinstance(err, dict):
        return body
    err = dict(err)
    if isinstance(err.get("message"), str):
        err["message"] = _message(err["message"], call)
    if isinstance(err.get("param"), str):
        err["param"] = _param(err["param"], call)
    return {**body, "error": err}


# -- the adapter --------------------------------------------------------------------------------------


class ResponsesAdapter(Backend):
    """A generate backend that also serves /v1/responses: its lines run as chat completions on the
    backend underneath; every other line passes through untouched."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.default_max_inflight = inner.default_max_inflight
        self._calls: dict[str, ResponsesCall] = {}
        # VllmBackend: vLLM's own ResponsesRequest checks the body first (None where vLLM has none)
        self._check = getattr(inner, "check_responses_body", None)

    def __getattr__(self, name: str) -> Any:
        # the backend's own extras (vLLM's sleep / wake_up, the tests' handles) stay reachable
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add(self, req: LineRequest) -> None:
        if req.endpoint != RESPONSES:
            self.inner.add(req)
            return
        if RESPONSES not in self.spec.endpoints:
            raise endpoint_mismatch(self.spec.id, req.endpoint, self.spec.endpoints)
        if self._check is not None:
            self._check(req.body)
        chat, call = to_chat(req.body, self.spec.id)
        try:
            self.inner.add(LineRequest(req.key, req.batch_id, req.custom_id, CHAT, chat, req.line))
        except LineError as exc:
            raise translate_error(exc, call) from exc
        self._calls[req.key] = call

    def step(self) -> list[LineResult]:
        results = self.inner.step()
        if self._calls:
            for r in results:
                call = self._calls.pop(r.key, None)
                if call is None:
                    continue
                if r.ok:
                    r.body = response_object_body(r.body, call.body, response_id=_response_id(r.body),
                                                  logprobs=call.want_logprobs)
                else:
                    r.body = _translate_body(r.body, call)
        return results

    def abort(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._calls.pop(key, None)
        self.inner.abort(keys)

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()

    def close(self) -> None:
        self._calls.clear()
        self.inner.close()

    def generated_tokens(self) -> int | None:
        return self.inner.generated_tokens()


def _response_id(chat_body: dict[str, Any]) -> str:
    # the chat answer's id with the Responses prefix: a line redone after a crash keeps the id the
    # simulated backend derives from its key
    cid = chat_body.get("id")
    if isinstance(cid, str) and cid.startswith("chatcmpl-") and len(cid) > 9:
        return "resp_" + cid[9:]
    return "resp_" + secrets.token_hex(16)
