"""Request-body limits in the app: a body that stops arriving, and how many uploads run at once.

A pure ASGI middleware inside the guard (so an unauthenticated request takes no upload slot):
- every `receive` while the request body is still coming waits at most RUNNER_BODY_TIMEOUT; a client
  that goes silent mid-body gets 408 request_timeout with Connection: close (the rest of its body
  will never be read, so the connection cannot be reused) and its upload slot and temp file go;
- POST /v1/files beyond RUNNER_MAX_CONCURRENT_UPLOADS gets 503 too_many_uploads with Retry-After
  before its body is read, so stalled uploads cannot take every descriptor (#14: 600 of them took
  the API to 1,023 fds and every other request failed).
The header limits live in the connection layer (api/connections.py): the app never sees a head.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.api.responses import OrjsonResponse
from runner.errors import RequestTimeout, ServiceUnavailable
from runner.settings import Settings

UPLOAD_PATH = "/v1/files"
UPLOAD_RETRY_AFTER = "5"


class BodyLimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.body_timeout = settings.body_timeout
        self.max_uploads = settings.max_concurrent_uploads
        self.uploads = 0  # one event loop: a plain counter is enough

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timed = self._timed_receive(receive)
        if not (scope["method"] == "POST" and scope["path"] == UPLOAD_PATH):
            await self.app(scope, timed, send)
            return
        if self.uploads >= self.max_uploads:
            err = ServiceUnavailable(
                f"The server is receiving {self.max_uploads} uploads already; retry shortly.",
                code="too_many_uploads",
                # The body is left unread: the connection cannot carry another request.
                headers={"retry-after": UPLOAD_RETRY_AFTER, "connection": "close"},
            )
            await OrjsonResponse(err.body(), status_code=err.status, headers=err.headers)(scope, receive, send)
            return
        self.uploads += 1
        try:
            await self.app(scope, timed, send)
        finally:
            self.uploads -= 1

    def _timed_receive(self, receive: Receive) -> Receive:
        body_done = False

        async def timed() -> Message:
            nonlocal body_done
            if body_done:  # e.g. a streamed response listening for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body stopped arriving for {self.body_timeout:g} s.",
                    headers={"connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        return timed
