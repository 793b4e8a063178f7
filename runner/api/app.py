"""create_app(settings): routes, the one error handler, and the lifespan that opens the stores."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner.api import batches, dashboard, files, metrics, models, openapi, webhooks
from runner.api.auth import GuardMiddleware
from runner.api.limits import BodyLimitsMiddleware
from runner.api.responses import OrjsonResponse
from runner.api.services import Services
from runner.api.webhook_delivery import WebhookWorker
from runner.errors import ApiError, ServiceUnavailable, clip, openai_error_body
from runner.model_specs import ModelRegistry, load_model_specs
from runner.settings import Settings
from runner.store.doorbell import API_BELL_FILE, Doorbell

logger = logging.getLogger(__name__)

ROUTES = [
    Route("/health", models.health, methods=["GET"]),
    Route("/v1/files", files.create_file, methods=["POST"]),
    Route("/v1/files", files.list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", files.retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", files.file_content, methods=["GET"]),
    Route("/v1/batches", batches.create_batch, methods=["POST"]),
    Route("/v1/batches", batches.list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", batches.retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}", batches.delete_batch, methods=["DELETE"]),
    Route("/v1/batches/{batch_id}/cancel", batches.cancel_batch, methods=["POST"]),
    Route("/v1/model-config", models.model_config, methods=["GET"]),
    Route("/v1/models", models.list_models, methods=["GET"]),
    Route("/v1/webhook_endpoints", webhooks.create_endpoint, methods=["POST"]),
    Route("/v1/webhook_endpoints", webhooks.list_endpoints, methods=["GET"]),
    Route("/v1/webhook_endpoints/{webhook_endpoint_id}", webhooks.retrieve_endpoint, methods=["GET"]),
    Route("/v1/webhook_endpoints/{webhook_endpoint_id}", webhooks.update_endpoint, methods=["POST"]),
    Route("/v1/webhook_endpoints/{webhook_endpoint_id}", webhooks.delete_endpoint, methods=["DELETE"]),
    Route("/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret", webhooks.rotate_secret, methods=["POST"]),
    Route("/v1/webhook_endpoints/{webhook_endpoint_id}/test", webhooks.test_endpoint, methods=["POST"]),
    Route("/v1/webhook_event_types", webhooks.list_event_types, methods=["GET"]),
    Route("/metrics", metrics.metrics, methods=["GET"]),
    Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
    *dashboard.ROUTES,  # GET / and its static assets
]

_HTTP_MESSAGES = {404: "Unknown request URL", 405: "Method not allowed for this URL"}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return OrjsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    body = openai_error_body(f"{message}: {clip(request.method)} {clip(request.url.path)}", "invalid_request_error",
                             None, code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # One Route per method: Starlette's Allow names only the first route's methods (see #6).
        allowed = {m for r in ROUTES if r.path_regex.match(request.url.path) for m in r.methods or ()}
        headers["allow"] = ", ".join(sorted(allowed))
        headers.pop("Allow", None)
    return OrjsonResponse(body, status_code=exc.status_code, headers=headers)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


def _request_id_header(request: Request) -> dict[str, str]:
    # Starlette sends unhandled-error responses from ServerErrorMiddleware, outside GuardMiddleware,
    # so the guard's send wrapper never sees them: add the id it stored in the scope here.
    request_id = request.scope.get("state", {}).get("request_id")
    return {"x-request-id": request_id} if request_id else {}


def _disk_full_response(request: Request, extra: dict[str, str] | None = None) -> Response:
    err: ApiError = ServiceUnavailable("The server's disk is full; retry later.", code="disk_full")
    logger.error("disk full path=%s", request.url.path)
    return OrjsonResponse(err.body(), status_code=err.status, headers={"retry-after": "30", **(extra or {})})


async def _storage_error(request: Request, exc: Exception) -> Response:
    # A full disk is answered here, inside Starlette's ExceptionMiddleware, so the connection stays
    # usable for the client's retry. Anything else goes on to _server_error.
    if _is_disk_full(exc):
        return _disk_full_response(request)
    raise exc


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware re-raises after sending this answer and uvicorn then closes
    # the connection, so the answer must say so (#14: a 503 closed keep-alive silently).
    headers = {**_request_id_header(request), "connection": "close"}
    if _is_disk_full(exc):
        return _disk_full_response(request, headers)
    logger.exception("unhandled error path=%s", request.url.path, exc_info=exc)
    body = openai_error_body("The server had an error while processing your request.", "server_error", None,
                             "internal_error")
    return OrjsonResponse(body, status_code=500, headers=headers)


def create_app(
    settings: Settings,
    registry: ModelRegistry | None = None,
    *,
    background: Callable[[Services], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Starlette:
    """The ASGI app. `background` (e.g. the engine supervisor) runs for the app's lifetime."""
    models_registry = registry if registry is not None else load_model_specs(settings.models_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = Services(settings, models_registry)
        app.state.services = services
        services.resume_validation()
        stop_sweeping = asyncio.Event()
        sweeper = asyncio.create_task(_sweep_forever(services, stop_sweeping))
        # Webhook deliveries from the SQLite outbox (at least once; see webhook_delivery.py).
        webhook_worker = WebhookWorker(services.webhooks, settings)
        loop = asyncio.get_running_loop()
        services.wake_webhooks = lambda: loop.call_soon_threadsafe(webhook_worker.wake.set)
        # The engine rings api.bell when it ends a batch: its webhook event goes out now, not at the
        # worker's next timed look (store/doorbell.py).
        api_bell = Doorbell(settings.data_path / API_BELL_FILE)
        api_bell.listen_on_loop(loop, webhook_worker.wake.set)
        deliveries = asyncio.create_task(webhook_worker.run(stop_sweeping))
        try:
            if background is not None:
                async with background(services):
                    yield
            else:
                yield
        finally:
            # Stop the sweeper cooperatively and wait for a sweep already running in its worker
            # thread: cancelling the task would not stop that thread, and closing the store under it
            # crashed the process (see #11). close() then waits for request threads still in a query.
            services.stopping.set()
            stop_sweeping.set()
            await sweeper
            await deliveries
            api_bell.close_on_loop(loop)
            await asyncio.to_thread(services.close)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, OSError: _storage_error,
                            sqlite3.OperationalError: _storage_error, Exception: _server_error},
    )
    # Added first, so it runs inside the guard: an unauthenticated request takes no upload slot.
    app.add_middleware(BodyLimitsMiddleware, settings=settings)
    app.add_middleware(GuardMiddleware, settings=settings)
    return app


async def _sweep_forever(services: Services, stop: asyncio.Event) -> None:
    """Sweep expired files every sweep_interval seconds until `stop` is set."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(services.sweep)
        except Exception:
            logger.exception("sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), services.settings.sweep_interval)
