"""GET /v1/model-config (Mithril), GET /v1/models (OpenAI), GET /health."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from runner.api.responses import OrjsonResponse
from runner.api.services import Services
from runner.wire import model_config_object, model_object


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def model_config(request: Request) -> Response:
    svc = _services(request)
    specs = sorted(svc.registry.specs, key=lambda s: s.display_order)
    stamp = svc.registry.mtime or svc.started_at
    return OrjsonResponse({"active_models": [model_config_object(s, stamp) for s in specs]})


async def list_models(request: Request) -> Response:
    svc = _services(request)
    created = int(svc.registry.mtime or svc.started_at)
    return OrjsonResponse({"object": "list", "data": [model_object(s, created) for s in svc.registry.specs]})


async def health(request: Request) -> Response:
    svc: Services | None = getattr(request.app.state, "services", None)
    if svc is None:
        return OrjsonResponse({"status": "starting"}, status_code=503)
    health_of = getattr(svc, "engine_health", None)
    engine, reasons = health_of() if health_of is not None else (None, [])
    # What the engine reported about its models; a model that fails to load makes the server
    # "degraded" (still 200: it serves the API, and other models run). An engine that is frozen,
    # crash-looping, stuck behind engine.lock or making no progress makes it "unhealthy": 503, so a
    # monitor that reads only the status code sees it; `reasons` say why, with stable codes.
    models = await run_in_threadpool(svc.model_states.all)
    if reasons:
        status = "unhealthy"
    elif any(m["state"] != "loaded" for m in models.values()):
        status = "degraded"
    else:
        status = "ok"
    return OrjsonResponse({"status": status, "reasons": reasons, "engine": engine, "models": models},
                          status_code=503 if reasons else 200)
