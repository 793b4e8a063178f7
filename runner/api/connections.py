"""The HTTP connection layer: uvicorn's httptools protocol with limits on what one client may hold.

runner keeps uvicorn's httptools parser (C, ~3x h11's requests/s) and adds, per connection, what it
lacks (#14):
- a header size cap: the bytes of a request's line and headers are counted as they arrive, before
  httptools joins them, so a 128 MB header costs at most the cap plus one read (256 KiB), not
  seconds of copying on the event loop; over the cap -> 431 request_header_too_large;
- a header deadline: a request's line and headers must all arrive within RUNNER_HEADER_TIMEOUT of
  its first byte (a slowloris sending a line now and then keeps nothing alive) -> 408; a new
  connection that sends nothing for that long is closed;
- a connection cap (RUNNER_MAX_CONNECTIONS, by default sized from RLIMIT_NOFILE so sockets cannot eat
  the descriptors files need) -> 503 too_many_connections.
These answers are written here because the app never sees a request whose head is incomplete; they
are in OpenAI's error shape all the same, with x-request-id and Connection: close. The body timeout
and the upload cap live in the app (api/limits.py), which sees the request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runner.errors import ApiError, HeaderTooLarge, RequestTimeout, ServiceUnavailable
from runner.ids import new_request_id
from runner.settings import Settings

logger = logging.getLogger(__name__)

# After an early answer (431, 503), read and drop what the client still sends for this long before
# closing: closing a socket with unread input sends a reset, and the client, still writing its
# request, would lose the answer.
LINGER_SECONDS = 1.0
# Descriptors kept back from the automatic connection cap for the database, logs and the engine pipe.
FD_RESERVE = 64


def max_connections(settings: Settings) -> int:
    if settings.max_connections:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    # Each connection may also hold one file open (an upload's temp file, a download).
    return max(16, (soft - FD_RESERVE) // 2)


def error_response(error: ApiError, extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response carrying `error` in OpenAI's shape, closing the connection."""
    body = orjson.dumps(error.body())
    headers = {"content-type": "application/json", "content-length": str(len(body)),
               "x-request-id": new_request_id(), **error.headers, **(extra or {}), "connection": "close"}
    head = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
    return STATUS_LINE[error.status] + head + b"\r\n" + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. Class attributes are set by `protocol_class(settings)`."""

    max_header_bytes = 64 * 1024
    header_timeout = 10.0
    max_connections = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (or reading) a request's line and headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._closing = False  # an early answer went out: drop the input, close after LINGER_SECONDS
        self._started = False  # a request's first byte has arrived on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("connection refused: %d connections open (RUNNER_MAX_CONNECTIONS)", len(self.connections))
            # Far past the cap (a flood), close at once rather than hold a descriptor to linger.
            linger = len(self.connections) <= 2 * self.max_connections
            self._answer_and_close(ServiceUnavailable(
                f"The server has {self.max_connections} connections open; retry shortly.",
                code="too_many_connections", headers={"retry-after": "1"}), linger=linger)
            return
        # A connection that never sends a byte is closed after header_timeout like a slow head.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._in_head:
            if not self._started:  # the head's deadline runs from its first byte
                self._started = True
                self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self._closing:
            logger.warning("request head over %d bytes refused (431)", self.max_header_bytes)
            self._answer_and_close(HeaderTooLarge(
                f"The request line and headers are larger than the limit of {self.max_header_bytes} bytes."))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next bytes belong to the next request's head; its deadline starts with its first byte
        # (until then uvicorn's keep-alive timeout bounds the idle connection).
        self._in_head = True
        self._started = False
        super().on_message_complete()

    # -- helpers --------------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self._closing or self.transport.is_closing():
            return
        if not self._started:
            self.transport.close()  # nothing was asked: nothing to answer
            return
        self._answer_and_close(RequestTimeout(
            f"The request line and headers did not arrive within {self.header_timeout:g} s."))

    def _answer_and_close(self, error: ApiError, *, linger: bool = True) -> None:
        self._closing = True
        self._cancel_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined earlier request is still being answered: an answer now would interleave.
            self.transport.close()
            return
        self.transport.write(error_response(error))
        if not linger:
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close_now)

    def _close_now(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        # The client finished (or gave up) after an early answer: close now rather than linger.
        if self._closing:
            self.transport.close()
        return None


def protocol_class(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with this server's limits."""
    return type("RunnerHttpProtocol", (LimitedHttpToolsProtocol,), {
        "max_header_bytes": settings.max_header_bytes,
        "header_timeout": settings.header_timeout,
        "max_connections": max_connections(settings),
    })
