"""The one error tree of runner.

    RunnerError
      ConfigError        bad environment, option or models.yaml; the CLI prints one line and exits 2
      ApiError           an HTTP error in OpenAI's shape: status, type, code, param
        InvalidRequest   400 invalid_request_error
        Unauthorized     401 invalid_api_key
        PermissionDenied 403
        NotFound         404 (also for another owner's object)
        Conflict         409 (e.g. cancelling a finished batch, an illegal status change)
        PayloadTooLarge  413
        Unprocessable    422 (e.g. an Idempotency-Key sent again with another body)
        RequestTimeout   408 request_timeout: the headers or body stopped arriving (Connection: close)
        HeaderTooLarge   431 request_header_too_large: the request head is over RUNNER_MAX_HEADER_BYTES
        RateLimited      429 with Retry-After
        ServiceUnavailable 503 (e.g. disk full): retry later
          StoreClosed    503 shutting_down: the store was closed (the server is stopping)
          StoreBusy      503 database_busy with Retry-After: another process holds the write lock
      LineError          one input line failed: goes to the error file, the batch goes on
      EngineDead         the backend crashed: recoverable, the batch stays in_progress and resumes

Every `code` these carry is listed once, with its condition, in runner/error_codes.py.
Errors become messages only at the edges: `api/app.py` renders ApiError, `cli.py` renders
ConfigError, the engine's writer renders LineError into an error row. A client's value quoted in a
message or a `param` goes through `clip()` (bounded, #14).
"""

from __future__ import annotations

import reprlib
import sqlite3
from typing import Any


class RunnerError(Exception):
    """Base of every error runner raises on purpose."""


class ConfigError(RunnerError):
    """A setting, option or models.yaml entry is wrong; the message says which and why."""


class ApiError(RunnerError):
    """An error answered to an HTTP client as {"error": {message, type, param, code}}."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return openai_error_body(self.message, self.type, self.param, self.code)


class InvalidRequest(ApiError):
    """400: the request is malformed or breaks a rule of the API."""

    status = 400
    type = "invalid_request_error"


class Unauthorized(ApiError):
    """401: no API key, or one the server does not know."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    """403: the caller may not use this server from where it is."""

    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(ApiError):
    """404: no such object for this owner."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(ApiError):
    """409: the object's state does not allow this now."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(ApiError):
    """413: the upload is over the configured size cap."""

    status = 413
    type = "invalid_request_error"
    code = "file_too_large"


class Unprocessable(ApiError):
    """422: the request is well formed but contradicts an earlier one (an Idempotency-Key reused)."""

    status = 422
    type = "invalid_request_error"


class RequestTimeout(ApiError):
    """408: the client stopped sending its request; the connection is closed after the answer."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeaderTooLarge(ApiError):
    """431: the request line and headers are longer than the server reads."""

    status = 431
    type = "invalid_request_error"
    code = "request_header_too_large"


class RateLimited(ApiError):
    """429: this key sent more requests than its configured rate."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(ApiError):
    """503: the server cannot do this right now (disk full, shutting down); retry later."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class StoreClosed(ServiceUnavailable):
    """503: the store is closed because the process is shutting down; retry against the restarted server."""

    code = "shutting_down"


class StoreBusy(ServiceUnavailable, sqlite3.OperationalError):
    """503: SQLite's write lock stayed taken (a frozen engine, a long outside transaction) past the API's
    busy timeout. Also a sqlite3.OperationalError, so code that retries storage errors still does."""

    code = "database_busy"


class LineError(RunnerError):
    """One input line cannot be run; it becomes an HTTP-style error row and the batch goes on."""

    def __init__(
        self, message: str, *, status: int = 400, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param

    @property
    def type(self) -> str:
        if self.status == 404:
            return "invalid_request_error"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return openai_error_body(self.message, self.type, self.param, self.code)


MODEL_ENDPOINT_MISMATCH = "model_endpoint_mismatch"


def endpoint_mismatch_message(model: str, endpoint: str, serves: tuple[str, ...]) -> str:
    return f"The model {clip(model, quote=True)} does not serve {clip(endpoint)} (it serves {', '.join(serves)})."


def endpoint_mismatch(model: str, endpoint: str, serves: tuple[str, ...]) -> LineError:
    """The one error for "this model does not serve this endpoint", whichever path finds it:
    validation, `runner run`, or any backend (it had four codes before, see #12)."""
    return LineError(endpoint_mismatch_message(model, endpoint, serves), status=400, param="model",
                     code=MODEL_ENDPOINT_MISMATCH)


class EngineDead(RunnerError):
    """The backend or engine process died. Recoverable: batches stay in_progress and resume."""


def openai_error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    # The one renderer of API errors and error rows: a backstop for a message built from text runner
    # does not control (a library's exception) or from a value a call site forgot to clip.
    return {"error": {"message": clip(message, MESSAGE_LIMIT),
                      "type": type_, "param": None if param is None else clip(param, PARAM_LIMIT), "code": code}}


# -- client values in messages ----------------------------------------------------------------------

ECHO_LIMIT = 100  # characters of one client value a message echoes
PARAM_LIMIT = 200  # characters of a `param`: a path of field names, each name clipped to ECHO_LIMIT
MESSAGE_LIMIT = 2000  # characters of a whole message, whatever built it
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, ECHO_LIMIT, ECHO_LIMIT, 40


def clip(value: Any, limit: int = ECHO_LIMIT, *, quote: bool = False) -> str:
    """A client's value as an error message or `param` may echo it: text as is (quote=True: as its
    repr, 'like this'), anything else as its repr, cut to `limit` characters with a marker saying
    how many were left out: "'xxxx…(+999900 chars)'".

    Every client value that reaches a message goes through here (#14: a 30 MB upload gave 30
    validation errors of 2.5 MB each, and one GET of that batch returned 82 MB). A value that is not
    text is shown with reprlib, so a huge or deeply nested list costs no more than its first items.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value) if quote else value
        head, more = value[:limit], f"…(+{len(value) - limit} chars)"
        return f"{head!r}{more}" if quote else head + more
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
