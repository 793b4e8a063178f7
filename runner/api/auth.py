"""Request guard: x-request-id on every response, API key -> owner, per-key rate limit.

A pure ASGI middleware, so it also covers streamed responses and errors raised before routing.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.api import dashboard
from runner.api.responses import OrjsonResponse
from runner.errors import ApiError, InvalidRequest, PermissionDenied, RateLimited, Unauthorized
from runner.ids import new_request_id
from runner.settings import Settings, is_loopback

LOCAL_OWNER = "local"
# The dashboard page and its assets hold no data; the calls it makes carry the user's key.
OPEN_PATHS = ("/health", *dashboard.PATHS)
KEY_HEADERS = (b"authorization", b"x-api-key")
METRICS_PATH = "/metrics"
METRICS_OWNER = "metrics-scraper"  # who a request with RUNNER_METRICS_TOKEN is; it owns no batches


def owner_of_key(key: str) -> str:
    """Owners are stored as a hash of the key, so the database never holds a key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class TokenBucket:
    """requests-per-second rate with a burst, per owner."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, owner: str) -> float:
        """0 when allowed, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(owner, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[owner] = (tokens - 1.0, now)
                return 0.0
            self._state[owner] = (tokens, now)
            return (1.0 - tokens) / self.rate


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.keys = {k: owner_of_key(k) for k in settings.api_keys}
        self.metrics_token = settings.metrics_token
        self.bucket = TokenBucket(settings.rate_limit, settings.rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            owner = self._authenticate(scope)
        except ApiError as exc:
            response = OrjsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            await response(scope, receive, send_with_id)
            return
        scope["state"]["owner"] = owner
        await self.app(scope, receive, send_with_id)

    def _authenticate(self, scope: Scope) -> str | None:
        path: str = scope.get("path", "")
        if path in OPEN_PATHS:
            return None
        if path == METRICS_PATH and self.metrics_token and self._is_metrics_token(scope):
            owner = METRICS_OWNER  # a scrape token opens /metrics only (also on a keyless server)
        elif not self.keys:
            client = scope.get("client")
            if client and not is_loopback(str(client[0])) and client[0] != "testclient":
                raise PermissionDenied(
                    "This server has no API keys configured and serves loopback clients only.",
                )
            owner = LOCAL_OWNER
        else:
            owner = self._owner_from_headers(scope)
        wait = self.bucket.take(owner)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise RateLimited(
                f"Rate limit reached: {self.settings.rate_limit:g} requests per second per key. "
                f"Retry after {retry} s.",
                headers={"retry-after": str(retry)},
            )
        return owner

    def _is_metrics_token(self, scope: Scope) -> bool:
        for k, v in scope.get("headers", []):
            if k.lower() == b"authorization":
                auth = v.decode("latin-1").strip()
                if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(),
                                                                         self.metrics_token.encode()):
                    return True
        return False

    def _owner_from_headers(self, scope: Scope) -> str:
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            name = k.lower()
            if name in headers and name in KEY_HEADERS:
                # Authorization is not a list header (RFC 9110): two of them are ambiguous, and letting
                # the first win would authenticate with a key a proxy may have meant to replace.
                raise InvalidRequest(
                    f"The {name.decode()} header was sent more than once; send one API key.",
                    code="duplicate_authorization",
                )
            headers.setdefault(name, v)
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        key = ""
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        elif b"x-api-key" in headers:
            key = headers[b"x-api-key"].decode("latin-1").strip()
        if not key:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        for known, owner in self.keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return owner
        raise Unauthorized("Incorrect API key provided.")


def owner(request: Any) -> str:
    value: str = request.state.owner
    return value
