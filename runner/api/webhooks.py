"""/v1/webhook_endpoints (and /v1/webhook_event_types), as openai's client.webhooks calls them.

Each owner (API key) sees only its own endpoints; another owner's id is answered 404 not_found.
The signing secret is in the answers of create and rotate_secret only; other reads show
signing_secret_hint. `status` ("enabled" | "disabled") is runner's field beside OpenAI's: an
endpoint whose deliveries keep failing is disabled, and any update enables it again.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runner.api.auth import owner
from runner.api.params import int_param, json_body, str_param
from runner.api.responses import OrjsonResponse
from runner.api.services import Services
from runner.api.webhook_delivery import secrets_of, send_signed
from runner.errors import InvalidRequest, NotFound, clip
from runner.ids import new_batch_id
from runner.store.webhooks import EVENT_TYPES, event_body

MAX_URL = 2048
MAX_NAME = 256
_ID_RE = re.compile(r"^we_[a-z0-9]{1,64}$")
# Printable ASCII without space: a URL with a space, CR/LF or other control byte would let a
# client write its own headers into the delivery's request.
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _endpoint_id(request: Request) -> str:
    endpoint_id = str(request.path_params["webhook_endpoint_id"])
    if not _ID_RE.match(endpoint_id):
        raise NotFound(f"No such webhook endpoint: {clip(endpoint_id)}", param="webhook_endpoint_id")
    return endpoint_id


def _hint(secret: str) -> str:
    return f"whsec_...{secret[-4:]}"


def endpoint_object(row: Any, secret: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": row["id"],
        "object": "webhook_endpoint",
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "name": row["name"],
        "url": row["url"],
        "event_types": orjson.loads(row["event_types"]),
        "signing_secret_hint": _hint(row["secret"]),
        "status": row["status"],
        "disabled_at": row["disabled_at"],
    }
    if secret is not None:
        obj["signing_secret"] = secret
    return obj


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {clip(unknown[0])}", param=clip(unknown[0]),
                             code="unknown_parameter")


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'url' must be a non-empty string.", param="url", code="invalid_webhook_url")
    if len(value) > MAX_URL or not _URL_CHARS.match(value):
        raise InvalidRequest(f"'url' must be at most {MAX_URL} printable ASCII characters without spaces "
                             f"(percent-encode the rest), got {clip(value, quote=True)}.", param="url",
                             code="invalid_webhook_url")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise InvalidRequest(f"'url' must be an http:// or https:// URL with a host and no #fragment, got "
                             f"{clip(value, quote=True)}.", param="url", code="invalid_webhook_url")
    return value


def _event_types(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'event_types' must be a non-empty list of event types ({', '.join(EVENT_TYPES)}).",
                             param="event_types", code="invalid_value")
    out: list[str] = []
    for v in value:
        if v not in EVENT_TYPES:
            raise InvalidRequest(f"'event_types' has {clip(v, quote=True)}; this server sends "
                                 f"{', '.join(EVENT_TYPES)}.", param="event_types", code="invalid_value")
        if v not in out:
            out.append(v)
    return out


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidRequest(f"'name' must be a non-empty string of at most {MAX_NAME} characters.", param="name",
                             code="invalid_value")
    return value


async def _optional_body(request: Request) -> dict[str, Any]:
    """The JSON body, or {} when there is none (rotate_secret may be sent bare)."""
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return {}
    return await json_body(request)


async def create_endpoint(request: Request) -> Response:
    svc = _services(request)
    body = await json_body(request)
    _check_fields(body, {"event_types", "name", "url"})
    for field in ("event_types", "name", "url"):
        if field not in body:
            raise InvalidRequest(f"'{field}' is required.", param=field, code="missing_required_parameter")
    name, url, types = _name(body["name"]), _url(body["url"]), _event_types(body["event_types"])
    row, secret = await run_in_threadpool(
        lambda: svc.webhooks.create(owner(request), name=name, url=url, event_types=types, now=int(time.time()),
                                    max_endpoints=svc.settings.webhook_max_endpoints))
    return OrjsonResponse(endpoint_object(row, secret))


async def list_endpoints(request: Request) -> Response:
    svc = _services(request)
    limit = int_param(request, "limit", 20, 1, 100)
    after = str_param(request, "after")
    rows, has_more = await run_in_threadpool(svc.webhooks.list, owner(request), after=after, limit=limit)
    data = [endpoint_object(r) for r in rows]
    return OrjsonResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                           "last_id": data[-1]["id"] if data else None, "has_more": has_more})


async def retrieve_endpoint(request: Request) -> Response:
    svc = _services(request)
    row = await run_in_threadpool(svc.webhooks.get, owner(request), _endpoint_id(request))
    return OrjsonResponse(endpoint_object(row))


async def update_endpoint(request: Request) -> Response:
    svc = _services(request)
    endpoint_id = _endpoint_id(request)
    body = await _optional_body(request)
    _check_fields(body, {"event_types", "name", "url"})
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _name(body["name"])
    if "url" in body:
        changes["url"] = _url(body["url"])
    if "event_types" in body:
        changes["event_types"] = _event_types(body["event_types"])
    row = await run_in_threadpool(svc.webhooks.update, owner(request), endpoint_id, changes, int(time.time()))
    svc.wake_webhooks()  # a re-enabled endpoint's queued events go out now
    return OrjsonResponse(endpoint_object(row))


async def delete_endpoint(request: Request) -> Response:
    svc = _services(request)
    endpoint_id = _endpoint_id(request)
    await run_in_threadpool(svc.webhooks.delete, owner(request), endpoint_id)
    return OrjsonResponse({"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True})


async def rotate_secret(request: Request) -> Response:
    svc = _services(request)
    endpoint_id = _endpoint_id(request)
    body = await _optional_body(request)
    _check_fields(body, {"keep_old_secret_active_for_24_hours"})
    keep = body.get("keep_old_secret_active_for_24_hours", False)
    if not isinstance(keep, bool):
        raise InvalidRequest("'keep_old_secret_active_for_24_hours' must be a boolean.",
                             param="keep_old_secret_active_for_24_hours", code="invalid_value")
    row, secret = await run_in_threadpool(
        lambda: svc.webhooks.rotate_secret(owner(request), endpoint_id, keep_old=keep, now=int(time.time())))
    return OrjsonResponse(endpoint_object(row, secret))


async def test_endpoint(request: Request) -> Response:
    """Send one sample event now (signed like a real one, outside the outbox) and report the
    receiver's status code. A receiver that cannot be reached is a 400 webhook_unreachable."""
    svc = _services(request)
    endpoint_id = _endpoint_id(request)
    body = await json_body(request)
    _check_fields(body, {"event_type"})
    if "event_type" not in body:
        raise InvalidRequest("'event_type' is required.", param="event_type", code="missing_required_parameter")
    event_type = _event_types([body["event_type"]])[0]
    row = await run_in_threadpool(svc.webhooks.get, owner(request), endpoint_id)
    now = time.time()
    keys = secrets_of(row, now)
    payload = event_body(event_type, new_batch_id(), int(now))
    msg_id = orjson.loads(payload)["id"]
    timeout = svc.settings.webhook_timeout
    try:
        status = await send_signed(row["url"], msg_id, payload, keys, timeout)
    except TimeoutError:
        raise InvalidRequest(f"The endpoint did not answer within {timeout:g} s (RUNNER_WEBHOOK_TIMEOUT).",
                             param="webhook_endpoint_id", code="webhook_unreachable") from None
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"The endpoint could not be reached: {clip(f'{type(exc).__name__}: {exc}')}",
                             param="webhook_endpoint_id", code="webhook_unreachable") from None
    return OrjsonResponse({"object": "webhook_endpoint.test", "webhook_endpoint_id": endpoint_id,
                           "event_type": event_type, "status_code": status, "success": True})


async def list_event_types(request: Request) -> Response:
    return OrjsonResponse({"object": "list", "data": list(EVENT_TYPES)})
