"""Query and body parameters -> checked values, with a 400 naming the param on any mistake."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from runner.errors import InvalidRequest, PayloadTooLarge, clip

MAX_JSON_BODY = 1024 * 1024


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only: int() would also take "", " 5", "1_0" and non-ASCII digits (see #6).
    if not (raw.isascii() and raw.removeprefix("-").isdigit() and len(raw) <= 20):
        raise InvalidRequest(f"'{name}' must be an integer between {lo} and {hi}.", param=name,
                             code="invalid_value")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}, got {value}.", param=name,
                             code="invalid_value")
    return value


def choice_param(request: Request, name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw not in choices:  # "" too: an empty value is not one of the choices (see #6)
        raise InvalidRequest(f"'{name}' must be one of {', '.join(choices)}, got {clip(raw, quote=True)}.", param=name,
                             code="invalid_value")
    return raw


def str_param(request: Request, name: str, max_len: int = 256) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise InvalidRequest(f"'{name}' is too long.", param=name, code="invalid_value")
    return raw


async def json_body(request: Request) -> dict[str, Any]:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"The request body is larger than {MAX_JSON_BODY} bytes.", code="body_too_large")
    if not data.strip():
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_body")
    try:
        body = orjson.loads(bytes(data))
    except orjson.JSONDecodeError as exc:
        try:  # told apart off the fast path: bytes that are not UTF-8 are invalid_utf8 everywhere
            data.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidRequest(f"The request body is not valid UTF-8 ({uexc.reason} at byte {uexc.start}).",
                                 code="invalid_utf8") from None
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_body")
    return body


def expires_after(value: Any, param: str) -> int | None:
    """{anchor: "created_at", seconds: 3600..2592000} -> seconds, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object with 'anchor' and 'seconds'.", param=param,
                             code="invalid_value")
    unknown = sorted(set(value) - {"anchor", "seconds"})
    if unknown:
        name = f"{param}.{clip(unknown[0])}"  # the first: the key is the client's text
        raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    anchor = value.get("anchor", "created_at")
    if anchor != "created_at":
        raise InvalidRequest(f"'{param}.anchor' must be 'created_at'.", param=f"{param}.anchor",
                             code="invalid_value")
    seconds = value.get("seconds", 2_592_000)
    if isinstance(seconds, str) and seconds.strip().isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 3600 <= seconds <= 2_592_000:
        raise InvalidRequest(f"'{param}.seconds' must be an integer between 3600 and 2592000.",
                             param=f"{param}.seconds", code="invalid_value")
    return seconds
