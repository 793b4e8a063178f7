"""/v1/batches: create (validated off the event loop), list, retrieve, cancel, and the DELETE alias."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runner.api.auth import owner
from runner.api.idempotency import BATCHES, json_hash, once, request_key
from runner.api.params import expires_after, int_param, json_body, str_param
from runner.api.responses import OrjsonResponse
from runner.api.services import Services
from runner.errors import InvalidRequest, NotFound, clip
from runner.ids import looks_like_id, new_batch_id
from runner.jsonl import iter_lines
from runner.model_specs import SUPPORTED_ENDPOINTS
from runner.wire import batch_object, page

OPENAI_ONLY_ENDPOINTS = ("/v1/moderations", "/v1/images/generations", "/v1/images/edits",
                         "/v1/videos")
CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _batch_id(request: Request) -> str:
    batch_id = str(request.path_params["batch_id"])
    if not looks_like_id(batch_id) or not batch_id.startswith("batch_"):
        raise NotFound(f"No such Batch object: {clip(batch_id)}", param="batch_id")
    return batch_id


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'metadata' must be an object of string pairs.", param="metadata",
                             code="invalid_metadata")
    if len(value) > 16:
        raise InvalidRequest("'metadata' may have at most 16 pairs.", param="metadata", code="invalid_metadata")
    for k, v in value.items():
        if len(k) > 64:
            raise InvalidRequest("'metadata' keys may be at most 64 characters.", param="metadata",
                                 code="invalid_metadata")
        if not isinstance(v, str) or len(v) > 512:
            raise InvalidRequest("'metadata' values must be strings of at most 512 characters.",
                                 param="metadata", code="invalid_metadata")
    return dict(value)


def _endpoint_from_file(svc: Services, owner_id: str, file_id: str) -> str | None:
    """The url of the file's first request line, when a create names no endpoint (Mithril)."""
    try:
        row = svc.files.get(owner_id, file_id)
    except NotFound:
        return None  # the create itself answers the 404
    for _, raw in iter_lines(svc.files.path_of(row["id"]), svc.settings.max_line_bytes):
        try:
            url = orjson.loads(raw or b"").get("url")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return url if isinstance(url, str) and url in SUPPORTED_ENDPOINTS else None
    return None


async def create_batch(request: Request) -> Response:
    svc = _services(request)
    key = request_key(request)  # an Idempotency-Key: at most one batch per key and body (#16)
    body = await json_body(request)
    if key is None:
        return await _create_batch(request, svc, body)
    return await once(request, svc, BATCHES, key, json_hash(body), lambda: _create_batch(request, svc, body),
                      exists=lambda batch_id: svc.batches.get_any(batch_id) is not None)


async def _create_batch(request: Request, svc: Services, body: dict[str, Any]) -> Response:
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {', '.join(map(clip, unknown[:3]))}"
                             f"{' and more' if len(unknown) > 3 else ''}", param=clip(unknown[0]),
                             code="unknown_parameter")
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise InvalidRequest("'input_file_id' is required.", param="input_file_id", code="missing_required_parameter")
    endpoint = body.get("endpoint")
    if "endpoint" not in body and looks_like_id(input_file_id):
        # Mithril's create takes input_file_id alone: the endpoint then comes from the file's lines.
        endpoint = await run_in_threadpool(_endpoint_from_file, svc, owner(request), input_file_id)
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidRequest("'endpoint' is required.", param="endpoint", code="missing_required_parameter")
    if endpoint not in SUPPORTED_ENDPOINTS:
        hint = " (not served by this runner)" if endpoint in OPENAI_ONLY_ENDPOINTS else ""
        raise InvalidRequest(f"Unsupported endpoint {clip(endpoint, quote=True)}{hint}; one of "
                             f"{', '.join(SUPPORTED_ENDPOINTS)}.", param="endpoint", code="invalid_endpoint")
    window = body.get("completion_window", "24h")  # optional at Mithril
    window_seconds = svc.settings.window_seconds(window) if isinstance(window, str) else None
    if window_seconds is None:  # '24h' and RUNNER_COMPLETION_WINDOWS's (#16)
        accepted = ", ".join(repr(w) for w in svc.settings.accepted_windows)
        raise InvalidRequest(f"'completion_window' must be one of {accepted}.", param="completion_window",
                             code="invalid_completion_window")
    metadata = _metadata(body.get("metadata"))
    output_seconds = expires_after(body.get("output_expires_after"), "output_expires_after")
    if not looks_like_id(input_file_id) or not input_file_id.startswith("file-"):
        raise NotFound(f"No such File object: {clip(input_file_id)}", param="input_file_id")
    now = int(time.time())
    batch_id = new_batch_id()
    row = await run_in_threadpool(
        lambda: svc.batches.create(
            batch_id=batch_id,
            owner=owner(request),
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            metadata=metadata,
            output_expires_seconds=output_seconds,
            now=now,
            expires_at=now + window_seconds,
        )
    )
    svc.submit_validation(batch_id)
    return OrjsonResponse(batch_object(row))


async def list_batches(request: Request) -> Response:
    svc = _services(request)
    limit = int_param(request, "limit", 20, 1, 100)
    after = str_param(request, "after")
    rows, has_more = await run_in_threadpool(svc.batches.list, owner(request), after=after, limit=limit)
    rates = await run_in_threadpool(svc.stats.throughputs, rows)  # one query for the whole page
    return OrjsonResponse(page([batch_object(r, rates.get(r["id"])) for r in rows], has_more))


async def retrieve_batch(request: Request) -> Response:
    svc = _services(request)
    row = await run_in_threadpool(svc.batches.get, owner(request), _batch_id(request))
    rates = await run_in_threadpool(svc.stats.throughputs, [row])
    return OrjsonResponse(batch_object(row, rates.get(row["id"])))


async def cancel_batch(request: Request) -> Response:
    svc = _services(request)
    row = await run_in_threadpool(svc.batches.request_cancel, owner(request), _batch_id(request), int(time.time()))
    return OrjsonResponse(batch_object(row))


async def delete_batch(request: Request) -> Response:
    """Mithril's DELETE /v1/batches/{id}: an alias of cancel that answers {"message": ...}."""
    svc = _services(request)
    batch_id = _batch_id(request)
    row = await run_in_threadpool(svc.batches.request_cancel, owner(request), batch_id, int(time.time()))
    return OrjsonResponse({"message": f"Batch {batch_id} is {row['status']}."})
