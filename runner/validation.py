"""Validation: a batch input file -> (model, line count) or a list of line-numbered problems.

Runs off the event loop and streams through the file, so memory stays flat whatever its size.
Each problem has a stable `code`, the 1-based `line` and the `param` at fault. A value of the line
is echoed clipped (errors.clip), and the list is bounded in count (RUNNER_MAX_BATCH_ERRORS) and in
bytes (ERRORS_BYTES): the rest are counted in one too_many_errors entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runner.errors import MESSAGE_LIMIT, MODEL_ENDPOINT_MISMATCH, PARAM_LIMIT, clip, endpoint_mismatch_message
from runner.input_tokens import estimate
from runner.jsonl import iter_lines
from runner.model_specs import SUPPORTED_ENDPOINTS, ModelRegistry

YIELD_EVERY = 63  # a mask: a voluntary GIL hand-off every 64th line (~0.2 ms of work)


@dataclass
class ValidationResult:
    total: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    input_tokens: int = 0  # estimated (input_tokens.py): the batch's enqueued tokens for the quotas (#16)

    @property
    def ok(self) -> bool:
        return self.error_count == 0


# Bytes of the problems a Batch lists, as JSON: with RUNNER_MAX_BATCH_ERRORS raised, or messages
# near MESSAGE_LIMIT, a count cap alone would let one Batch object grow without bound, and every
# GET and list of it with it (#14). 100 typical problems take ~20 KB.
ERRORS_BYTES = 32 * 1024


class _Collector:
    def __init__(self, cap: int, budget: int = ERRORS_BYTES) -> None:
        self.cap = cap
        self.budget = budget
        self.result = ValidationResult()

    def add(self, code: str, message: str, *, line: int | None, param: str | None) -> None:
        self.result.error_count += 1
        if len(self.result.errors) >= self.cap or self.budget <= 0:
            return
        entry = {"code": code, "message": clip(message, MESSAGE_LIMIT),
                 "param": None if param is None else clip(param, PARAM_LIMIT), "line": line}
        size = len(orjson.dumps(entry)) + 1  # as stored and served (escapes and UTF-8 counted)
        if size > self.budget:
            self.budget = 0  # listing stops here (the list stays a prefix); the rest are counted
            return
        self.budget -= size
        self.result.errors.append(entry)


def validate_batch_file(
    path: str | Path,
    *,
    endpoint: str,
    models: ModelRegistry,
    max_lines: int,
    max_line_bytes: int,
    max_errors: int = 100,
) -> ValidationResult:
    c = _Collector(max_errors)
    res = c.result
    seen: set[str] = set()
    first_model: tuple[str, int] | None = None
    try:
        lines = iter_lines(path, max_line_bytes)
        for lineno, raw in lines:
            res.total += 1
            if not res.total & YIELD_EVERY:
                # Hand the GIL to the API's event loop. Left to the interpreter's 5 ms switch
                # interval, each poll answered meanwhile waited for it at every syscall (the convoy
                # effect): GET p50 rose to ~70 ms while a 50k-line file validated.
                time.sleep(0)
            if res.total > max_lines:
                c.add(
                    "too_many_requests",
                    f"The input file has more than {max_lines} requests; split it into several batches.",
                    line=lineno,
                    param=None,
                )
                break
            if raw is None:
                c.add("line_too_long", f"Line {lineno} is longer than {max_line_bytes} bytes.",
                      line=lineno, param=None)
                continue
            try:
                obj = orjson.loads(raw)  # rejects invalid UTF-8 too; told apart below, off the fast path
            except orjson.JSONDecodeError as exc:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as uexc:
                    c.add("invalid_utf8", f"Line {lineno} is not valid UTF-8 ({uexc.reason} at byte {uexc.start}).",
                          line=lineno, param=None)
                else:
                    c.add("invalid_json", f"Line {lineno} is not valid JSON: {clip(str(exc))}.", line=lineno,
                          param=None)
                continue
            if not isinstance(obj, dict):
                c.add("invalid_request", f"Line {lineno} must be a JSON object.", line=lineno, param=None)
                continue
            cid = obj.get("custom_id")
            if "custom_id" not in obj:
                c.add("missing_custom_id", "Every request must have a 'custom_id'.", line=lineno, param="custom_id")
            elif not isinstance(cid, str) or not cid:
                c.add("invalid_custom_id", "'custom_id' must be a non-empty string.", line=lineno, param="custom_id")
            elif cid in seen:
                c.add(
                    "duplicate_custom_id",
                    f"The custom_id for this request is a duplicate of another request: {clip(cid, quote=True)}. "
                    "custom_id must be unique within a batch.",
                    line=lineno,
                    param="custom_id",
                )
            else:
                seen.add(cid)
            method = obj.get("method")
            if method != "POST":
                c.add("invalid_method", f"'method' must be 'POST', got {clip(method, quote=True)}.", line=lineno,
                      param="method")
            url = obj.get("url")
            if not isinstance(url, str):
                c.add("missing_url", "'url' is required and must be a string.", line=lineno, param="url")
            elif url != endpoint:
                if url not in SUPPORTED_ENDPOINTS:
                    c.add("invalid_url", f"Unsupported url {clip(url, quote=True)}; supported: "
                          f"{', '.join(SUPPORTED_ENDPOINTS)}.",
                          line=lineno, param="url")
                else:
                    c.add("mismatched_url", f"The url {clip(url, quote=True)} does not match the batch endpoint "
                          f"{endpoint!r}.",
                          line=lineno, param="url")
            body = obj.get("body")
            if not isinstance(body, dict):
                c.add("invalid_body", "'body' is required and must be a JSON object.", line=lineno, param="body")
                continue
            res.input_tokens += estimate(body)
            if body.get("stream") not in (None, False):
                c.add("stream_unsupported", "'stream' is not supported in a batch.", line=lineno, param="body.stream")
            model = body.get("model")
            if not isinstance(model, str) or not model:
                c.add("missing_model", "'body.model' is required and must be a string.", line=lineno,
                      param="body.model")
                continue
            spec = models.get(model)
            if spec is None:
                c.add("model_not_found", f"The model {clip(model, quote=True)} does not exist on this server; "
                      f"available: {', '.join(models.ids)}.", line=lineno, param="body.model")
                continue
            if not spec.serves(endpoint):
                c.add(MODEL_ENDPOINT_MISMATCH, endpoint_mismatch_message(model, endpoint, spec.endpoints),
                      line=lineno, param="body.model")
            if first_model is None:
                first_model = (model, lineno)
                res.model = model
            elif model != first_model[0]:
                c.add("mixed_models", f"Each input file may use a single model: line {first_model[1]} uses "
                      f"{clip(first_model[0], quote=True)}, this line uses {clip(model, quote=True)}.", line=lineno,
                      param="body.model")
    except OSError as exc:
        c.add("file_unreadable", f"The input file cannot be read: {exc.strerror}.", line=None, param="input_file_id")
    if res.total == 0 and res.error_count == 0:
        c.add("empty_file", "The input file has no requests.", line=None, param="input_file_id")
    if res.error_count > len(res.errors):
        res.errors.append({
            "code": "too_many_errors",
            "message": f"{res.error_count - len(res.errors)} more problems were found and not listed.",
            "param": None,
            "line": None,
        })
    return res
