"""Idempotency-Key on POST /v1/batches and POST /v1/files: a client that retries a create (its
connection dropped before the answer came) sends the same key and gets the first answer again,
not a second batch or file.

Per owner and route, a key names one request body (its sha256: canonical JSON for a batch; the
form's fields, the file's name and a digest of its bytes taken while they stream, for a file):
- the same body within KEY_TTL (24 h): the first answer, status and body, with Idempotent-Replayed: true;
- another body: 422 idempotency_key_reused;
- the same body while the first is still being answered: 409 idempotency_key_in_use (Retry-After: 1;
  the openai SDK retries a 409 by itself and then gets the replay);
- a first request that failed (any 4xx/5xx, or an exception) keeps nothing: its retry runs afresh;
- a first answer whose object has since been deleted is not replayed (it would name a file or batch
  that answers 404): the key is forgotten and the request runs afresh.
The claim/complete/release bookkeeping is runner/store/idempotency.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runner.api.auth import owner
from runner.api.services import Services
from runner.errors import ApiError, Conflict, InvalidRequest, Unprocessable, clip

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255  # as Stripe and OpenAI's SDKs bound it
BATCHES = "POST /v1/batches"
FILES = "POST /v1/files"


def request_key(request: Request) -> str | None:
    """The request's Idempotency-Key (header names are case-insensitive), None when it sent none."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"Send one {HEADER} header, not {len(values)}.", param=HEADER,
                             code="invalid_idempotency_key")
    key = values[0]
    if not key.strip() or len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(f"{HEADER} must be 1 to {MAX_KEY_CHARS} characters, got {len(key)}: "
                             f"{clip(key, quote=True)}.", param=HEADER, code="invalid_idempotency_key")
    return key


def json_hash(body: dict[str, Any]) -> str:
    """sha256 of the body as canonical JSON: the same fields in another order are the same request."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def upload_hash(fields: dict[str, str], filename: str, file_sha256: str) -> str:
    """sha256 of an upload: every form field (purpose, expires_after), the file's name and its bytes' digest."""
    return json_hash({"fields": fields, "filename": filename, "file_sha256": file_sha256})


async def once(request: Request, svc: Services, route: str, key: str, body_hash: str,
               work: Callable[[], Awaitable[Response]], *,
               exists: Callable[[str], bool] | None = None) -> Response:
    """Answer with work() at most once per (owner, route, key): replay, refuse, or run and keep the answer.
    `exists(object id)`: whether the object a first answer created is still there (not deleted)."""
    who, store = owner(request), svc.idempotency
    claim = await run_in_threadpool(store.claim, who, route, key, body_hash, time.time())
    if claim.outcome == "replay" and exists is not None and not await run_in_threadpool(
            _still_there, claim.response, exists):
        await run_in_threadpool(store.forget, who, route, key)
        claim = await run_in_threadpool(store.claim, who, route, key, body_hash, time.time())
    if claim.outcome == "replay":
        return Response(claim.response, status_code=claim.status or 200, media_type="application/json",
                        headers={REPLAYED_HEADER: "true"})
    if claim.outcome == "reused":
        raise Unprocessable(f"The {HEADER} {clip(key, quote=True)} was already used with another request body "
                            f"in the last 24 hours; use a new key for a new request.", param=HEADER,
                            code="idempotency_key_reused")
    if claim.outcome == "in_use":
        raise Conflict(f"A request with this {HEADER} is still being answered; retry in a moment for its answer.",
                       param=HEADER, code="idempotency_key_in_use",
                       headers={"retry-after": "1"})
    try:
        response = await work()
    except BaseException:
        await _release(svc, who, route, key, claim.token)
        raise
    if response.status_code >= 400:
        await _release(svc, who, route, key, claim.token)
        return response
    try:
        kept = await run_in_threadpool(store.complete, who, route, key, claim.token, response.status_code,
                                       bytes(response.body).decode())
    except (sqlite3.Error, ApiError) as exc:
        # The work is done and committed: answer it. The claim stays unanswered until CLAIM_TIMEOUT, so
        # a retry meanwhile gets 409 rather than a second object.
        logger.warning("idempotency key answer not kept route=%s: %s", route, exc)
        return response
    if not kept:
        logger.warning("idempotency key claim was taken over before its answer route=%s", route)
    return response


def _still_there(response: str | None, exists: Callable[[str], bool]) -> bool:
    try:
        object_id = orjson.loads(response or "{}").get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return True  # not an object answer: replay it as it is
    return not isinstance(object_id, str) or exists(object_id)


async def _release(svc: Services, who: str, route: str, key: str, token: float) -> None:
    # Shielded: a request cancelled mid-work (client gone) still frees its key. If even this fails,
    # the claim is taken over after CLAIM_TIMEOUT.
    try:
        await asyncio.shield(run_in_threadpool(svc.idempotency.release, who, route, key, token))
    except (sqlite3.Error, ApiError, asyncio.CancelledError) as exc:
        logger.warning("idempotency key not released route=%s: %r", route, exc)
