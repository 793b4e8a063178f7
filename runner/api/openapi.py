"""OpenAPI 3.1 description of the whole HTTP API -> GET /openapi.json.

The schemas are exact (closed objects, every field required as the server always sends it, nullable
where it may be null) so that schemathesis (tests/reliability/test_fuzz.py) can check every response
against them. Keep this in step with runner/wire.py (shapes) and runner/api/params.py (limits).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runner.api.responses import OrjsonResponse
from runner.model_specs import SUPPORTED_ENDPOINTS

FILE_PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
FILE_OBJECT_PURPOSES = [*FILE_PURPOSES, "batch_output"]
BATCH_STATUSES = ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                  "cancelled"]
FILE_ID = {"type": "string", "pattern": "^file-[a-z0-9]{1,64}$", "maxLength": 69}
BATCH_ID = {"type": "string", "pattern": "^batch_[a-z0-9]{1,64}$", "maxLength": 70}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _closed(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False}


INT = {"type": "integer"}
STR = {"type": "string"}
ENDPOINT_LIST = {"type": "array", "items": {"type": "string", "enum": list(SUPPORTED_ENDPOINTS)},
                 "description": "The batch endpoints the model serves."}
TS = {"type": "integer", "minimum": 0}
EXPIRES_AFTER = _closed(
    {"anchor": {"type": "string", "enum": ["created_at"], "default": "created_at"},
     "seconds": {"type": "integer", "minimum": 3600, "maximum": 2_592_000, "default": 2_592_000}},
    required=[],
)

SCHEMAS: dict[str, Any] = {
    "Error": _closed({"error": _closed({
        "message": STR, "type": STR, "param": _nullable(STR), "code": _nullable(STR)})}),
    "File": _closed({
        "id": FILE_ID,
        "object": {"const": "file"},
        "bytes": {"type": "integer", "minimum": 0},
        "created_at": TS,
        "expires_at": _nullable(TS),
        "filename": STR,
        "purpose": {"type": "string", "enum": FILE_OBJECT_PURPOSES},
        "status": {"type": "string", "enum": ["uploaded", "processed", "error"]},
        "status_details": _nullable(STR),
    }),
    "FileList": _closed({
        "object": {"const": "list"}, "data": {"type": "array", "items": _ref("File")},
        "first_id": _nullable(FILE_ID), "last_id": _nullable(FILE_ID), "has_more": {"type": "boolean"},
    }),
    "FileDeleted": _closed({"id": FILE_ID, "object": {"const": "file"}, "deleted": {"const": True}}),
    "BatchError": _closed({"code": _nullable(STR), "message": _nullable(STR), "param": _nullable(STR),
                           "line": _nullable({"type": "integer", "minimum": 1})}),
    "Batch": _closed({
        "id": BATCH_ID,
        "object": {"const": "batch"},
        "endpoint": STR,
        "model": _nullable(STR),
        "errors": _nullable(_closed({"object": {"const": "list"},
                                     "data": {"type": "array", "items": _ref("BatchError")}})),
        "input_file_id": FILE_ID,
        "completion_window": {"const": "24h"},
        "status": {"type": "string", "enum": BATCH_STATUSES},
        "output_file_id": _nullable(FILE_ID),
        "error_file_id": _nullable(FILE_ID),
        "created_at": TS,
        **{k: _nullable(TS) for k in ("in_progress_at", "expires_at", "finalizing_at", "completed_at",
                                      "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
        "request_counts": _closed({k: {"type": "integer", "minimum": 0} for k in ("total", "completed", "failed")}),
        "metadata": _nullable({"type": "object", "additionalProperties": {"type": "string", "maxLength": 512},
                               "maxProperties": 16}),
        "usage": _closed({
            "input_tokens": INT,
            "input_tokens_details": _closed({"cached_tokens": INT}),
            "output_tokens": INT,
            "output_tokens_details": _closed({"reasoning_tokens": INT}),
            "total_tokens": INT,
        }),
        # runner's extra: measured over the last minute while in_progress, else null
        "throughput": _nullable(_closed({
            "lines_per_second": {"type": "number", "minimum": 0},
            "output_tokens_per_second": {"type": "number", "minimum": 0},
            "eta_seconds": _nullable({"type": "number", "minimum": 0}),
        })),
    }),
    "BatchList": _closed({
        "object": {"const": "list"}, "data": {"type": "array", "items": _ref("Batch")},
        "first_id": _nullable(BATCH_ID), "last_id": _nullable(BATCH_ID), "has_more": {"type": "boolean"},
    }, required=["object", "data", "has_more"]),
    "BatchDeleted": _closed({"message": STR}),
    "CreateBatchRequest": _closed({
        "input_file_id": {"type": "string", "minLength": 1},
        "endpoint": {"type": "string", "enum": list(SUPPORTED_ENDPOINTS)},
        "completion_window": {"type": "string", "enum": ["24h"]},
        "metadata": _nullable({"type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64},
                               "additionalProperties": {"type": "string", "maxLength": 512}}),
        "output_expires_after": EXPIRES_AFTER,
    # OpenAI clients send all three; Mithril's send input_file_id alone (endpoint then comes from the file).
    }, required=["input_file_id"]),
    "UploadFileRequest": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": FILE_PURPOSES},
            "expires_after": EXPIRES_AFTER,
        },
        "required": ["file", "purpose"],
        "additionalProperties": False,
    },
    "ModelConfig": _closed({
        "id": STR, "name": STR, "description": STR,
        "input_price_cents": {"type": "number"}, "output_price_cents": {"type": "number"},
        "model_code": STR,
        "num_parameters_billions": _nullable({"type": "number"}), "num_experts": _nullable({"type": "number"}),
        "context_length": _nullable({"type": "number"}), "display_order": {"type": "number"},
        "license_url": _nullable(STR), "created_at": STR, "updated_at": STR, "status": STR,
        "endpoints": ENDPOINT_LIST,
    }),
    "ModelConfigList": _closed({"active_models": {"type": "array", "items": _ref("ModelConfig")}}),
    "Model": _closed({"id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR,
                      "endpoints": ENDPOINT_LIST}),
    "ModelList": _closed({"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}}),
    "Health": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unhealthy", "starting"],
                   "description": "ok / degraded (a model failed to load or is stopped): 200; unhealthy "
                   "(see reasons) and starting: 503."},
        "reasons": {"type": "array", "description": "Why the server is unhealthy; empty when it is not.",
                    "items": _closed({"code": {"type": "string", "enum": [
                        "engine_frozen", "engine_crash_loop", "engine_waiting_for_lock", "engine_no_progress"]},
                        "message": STR})},
        "engine": _nullable({"type": "object", "description": "null when the API runs without an engine.",
                             "properties": {
                                 "alive": {"type": "boolean"}, "pid": _nullable(INT), "restarts": INT,
                                 "waiting_for_lock": _nullable({"type": "object", "properties": {
                                     "holder_pid": _nullable(INT), "holder_orphaned": {"type": "boolean"},
                                     "since": {"type": "number"}}})}}),
        "models": {"type": "object", "description": "What the engine reported per model: state (loaded | "
                   "load_failed), error, attempts (failed loads in a row), retry_at (unix time).",
                   "additionalProperties": {"type": "object", "properties": {
                       "state": {"type": "string", "enum": ["loaded", "load_failed", "stopped"]},
                       "error": _nullable(STR), "attempts": {"type": "integer"},
                       "retry_at": _nullable({"type": "number"})}}}},
               "required": ["status"]},
}

_REQUEST_ID = {"x-request-id": {"description": "Id of this request, for logs.", "required": True,
                                "schema": {"type": "string", "pattern": "^req_"}}}
_ERROR_TEXT = {
    400: "Invalid request (a parameter, body or multipart part is wrong).",
    401: "Missing or unknown API key.",
    403: "No API keys are configured and the client is not on loopback.",
    404: "No such object for this key (another key's objects are never visible).",
    405: "Method not allowed for this URL.",
    409: "The object's state does not allow this now (or the Idempotency-Key's first request is still being "
         "answered: retry after Retry-After).",
    413: "The upload or body is larger than the server's limit.",
    416: "The Range starts at or past the end of the file (Content-Range: bytes */size).",
    422: "The Idempotency-Key was used in the last 24 h with another request body.",
    429: "This key exceeded its request rate; see Retry-After.",
    500: "The server failed (file_damaged: the stored file is not the bytes recorded).",
    503: "The server cannot do this now (e.g. disk full); retry later.",
}
_COMMON = (401, 403, 405, 429)


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": _REQUEST_ID, "content": {"application/json": {"schema": schema}}}


def _op(op_id: str, summary: str, ok: dict[str, Any], errors: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in sorted(set(errors) | set(_COMMON)):
        responses[str(status)] = _json_response(_ERROR_TEXT[status], _ref("Error"))
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


def _content_op() -> dict[str, Any]:
    """File content: 200 whole, 206 for one `Range: bytes=...` (HEAD answers the same headers)."""
    body = {"application/jsonl": {"schema": {"type": "string"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    op = _op("retrieveFileContent", "The file's bytes (streamed), whole or one byte range.", {
        "description": "The bytes; for a running batch's output, up to the last checkpoint.",
        "headers": _REQUEST_ID, "content": body}, (404, 416, 500))
    op["parameters"] = [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                         "description": "One range: bytes=a-b, bytes=a- or bytes=-n (several: the whole file)."}]
    op["responses"]["206"] = {"description": "The range asked for; Content-Range says where it lies.",
                              "headers": _REQUEST_ID, "content": body}
    return op


def _links(**links: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {"operationId": op, **spec} for name, (op, spec) in links.items()}


FILE_LINKS = _links(
    RetrieveFile=("retrieveFile", {"parameters": {"file_id": "$response.body#/id"}}),
    FileContent=("retrieveFileContent", {"parameters": {"file_id": "$response.body#/id"}}),
    DeleteFile=("deleteFile", {"parameters": {"file_id": "$response.body#/id"}}),
    CreateBatch=("createBatch", {"requestBody": {"input_file_id": "$response.body#/id",
                                                 "endpoint": "/v1/chat/completions", "completion_window": "24h"}}),
)
BATCH_LINKS = _links(
    RetrieveBatch=("retrieveBatch", {"parameters": {"batch_id": "$response.body#/id"}}),
    CancelBatch=("cancelBatch", {"parameters": {"batch_id": "$response.body#/id"}}),
    DeleteBatch=("deleteBatch", {"parameters": {"batch_id": "$response.body#/id"}}),
    InputFile=("retrieveFile", {"parameters": {"file_id": "$response.body#/input_file_id"}}),
)


def _with_links(response: dict[str, Any], links: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": links}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


FILE_ID_PARAM = _param("file_id", "path", FILE_ID, "The file's id.")
BATCH_ID_PARAM = _param("batch_id", "path", BATCH_ID, "The batch's id.")
AFTER = {"type": "string", "maxLength": 256}  # empty means absent
IDEMPOTENCY_KEY_PARAM = _param(
    "Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"},
    "Optional. The same key with the same body within 24 h answers the first answer again (header "
    "Idempotent-Replayed: true) instead of creating another object; with another body: 422.")


def _health_op() -> dict[str, Any]:
    op = _op("health", "Readiness and health of the server (no key needed). 200: ok or degraded; 503: "
             "starting, or unhealthy with `reasons` (engine frozen, crash-looping, waiting for engine.lock, "
             "no progress) for monitoring.", _json_response("Ready.", _ref("Health")), ())
    op["responses"]["503"] = _json_response("Starting, or unhealthy: `status` and `reasons` say which.",
                                            _ref("Health"))
    return {**op, "security": []}


EVENT_TYPE = {"type": "string", "enum": ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]}
_WEBHOOK_FIELDS: dict[str, Any] = {
    "id": STR, "object": {"const": "webhook_endpoint"}, "created_at": TS, "updated_at": TS, "name": STR, "url": STR,
    "event_types": {"type": "array", "items": STR}, "signing_secret_hint": STR,
    # runner's extras: disabled after a run of failed deliveries; any update enables it again
    "status": {"type": "string", "enum": ["enabled", "disabled"]}, "disabled_at": _nullable(TS),
}
WEBHOOK_SCHEMAS: dict[str, Any] = {
    "WebhookEndpoint": _closed(_WEBHOOK_FIELDS),
    "WebhookEndpointWithSecret": _closed({**_WEBHOOK_FIELDS, "signing_secret": {"type": "string",
                                                                                  "pattern": "^whsec_"}}),
    "WebhookEndpointList": _closed({
        "object": {"const": "list"}, "data": {"type": "array", "items": _ref("WebhookEndpoint")},
        "first_id": _nullable(STR), "last_id": _nullable(STR), "has_more": {"type": "boolean"}}),
    "WebhookEndpointDeleted": _closed({"id": STR, "object": {"const": "webhook_endpoint.deleted"},
                                       "deleted": {"const": True}}),
    "WebhookEndpointTestResult": _closed({"object": {"const": "webhook_endpoint.test"}, "webhook_endpoint_id": STR,
                                          "event_type": STR, "status_code": INT, "success": {"const": True}}),
    "WebhookEventTypeList": _closed({"object": {"const": "list"}, "data": {"type": "array", "items": STR}}),
    "CreateWebhookEndpointRequest": _closed({
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "url": {"type": "string", "pattern": "^https?://[a-z0-9.-]+(:[0-9]{1,5})?/[!-~]*$", "maxLength": 2048},
        "event_types": {"type": "array", "items": EVENT_TYPE, "minItems": 1}}),
    "UpdateWebhookEndpointRequest": _closed({
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "url": {"type": "string", "pattern": "^https?://[a-z0-9.-]+(:[0-9]{1,5})?/[!-~]*$", "maxLength": 2048},
        "event_types": {"type": "array", "items": EVENT_TYPE, "minItems": 1}}, required=[]),
    "RotateWebhookSecretRequest": _closed({"keep_old_secret_active_for_24_hours": {"type": "boolean"}}, required=[]),
    "TestWebhookEndpointRequest": _closed({"event_type": EVENT_TYPE}),
}
WEBHOOK_ID_PARAM = _param("webhook_endpoint_id", "path", {"type": "string", "pattern": "^we_[a-z0-9]{1,64}$"},
                          "The webhook endpoint's id.")


def _json_body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _webhook_paths() -> dict[str, Any]:
    """/v1/webhook_endpoints as openai's client.webhooks calls it (runner/api/webhooks.py)."""
    endpoint = _json_response("The webhook endpoint.", _ref("WebhookEndpoint"))
    with_secret = _json_response("The webhook endpoint with its signing_secret (shown only here).",
                                 _ref("WebhookEndpointWithSecret"))
    return {
        "/v1/webhook_endpoints": {
            "post": _op("createWebhookEndpoint", "Create a webhook endpoint for batch endings.", with_secret,
                        (400, 503), requestBody=_json_body("CreateWebhookEndpointRequest")),
            "get": _op("listWebhookEndpoints", "List this key's webhook endpoints, newest first.",
                       _json_response("A page of endpoints.", _ref("WebhookEndpointList")), (400,),
                       parameters=[_param("after", "query", AFTER, "Id of the last endpoint of the previous page."),
                                   _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100,
                                                             "default": 20}, "Page size.")]),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}": {
            "parameters": [WEBHOOK_ID_PARAM],
            "get": _op("retrieveWebhookEndpoint", "A webhook endpoint (without its secret).", endpoint, (404,)),
            "post": _op("updateWebhookEndpoint", "Update name, url or event_types; enables a disabled endpoint.",
                        endpoint, (400, 404, 503), requestBody=_json_body("UpdateWebhookEndpointRequest", False)),
            "delete": _op("deleteWebhookEndpoint", "Delete a webhook endpoint and its undelivered events.",
                          _json_response("Deleted.", _ref("WebhookEndpointDeleted")), (404, 503)),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret": {
            "parameters": [WEBHOOK_ID_PARAM],
            "post": _op("rotateWebhookSecret", "A new signing secret.", with_secret, (400, 404, 503),
                        requestBody=_json_body("RotateWebhookSecretRequest", False)),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}/test": {
            "parameters": [WEBHOOK_ID_PARAM],
            "post": _op("testWebhookEndpoint", "Send a signed sample event now; the receiver's status code.",
                        _json_response("The test's result.", _ref("WebhookEndpointTestResult")), (400, 404),
                        requestBody=_json_body("TestWebhookEndpointRequest")),
        },
        "/v1/webhook_event_types": {"get": _op("listWebhookEventTypes", "The event types this server sends.",
                                               _json_response("Event types.", _ref("WebhookEventTypeList")), ())},
    }


def openapi_spec(max_upload_bytes: int | None = None) -> dict[str, Any]:
    upload_note = f" At most {max_upload_bytes} bytes." if max_upload_bytes else ""
    paths: dict[str, Any] = {
        "/health": {"get": _health_op()},
        "/v1/files": {
            "post": _op(
                "createFile", "Upload a file (streamed to disk; any name)." + upload_note,
                _with_links(_json_response("The File object.", _ref("File")), FILE_LINKS), (400, 409, 413, 422, 503),
                parameters=[IDEMPOTENCY_KEY_PARAM],
                requestBody={"required": True, "content": {"multipart/form-data": {
                    "schema": _ref("UploadFileRequest"),
                    "encoding": {"expires_after": {"contentType": "application/json"}}}}},
            ),
            "get": _op(
                "listFiles", "List this key's files.", _json_response("A page of files.", _ref("FileList")), (400,),
                parameters=[
                    _param("purpose", "query", {"type": "string", "maxLength": 64}, "Only files of this purpose."),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 10_000},
                           "Page size."),
                    _param("order", "query", {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
                           "Order by creation."),
                    _param("after", "query", AFTER, "Id of the last file of the previous page (one of yours)."),
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "parameters": [FILE_ID_PARAM],
            "get": _op("retrieveFile", "A File object.", _json_response("The File object.", _ref("File")), (404,)),
            "delete": _op("deleteFile", "Delete a file (409 while a running batch uses it).",
                          _json_response("Deleted.", _ref("FileDeleted")), (404, 409, 503)),
        },
        "/v1/files/{file_id}/content": {
            "parameters": [FILE_ID_PARAM],
            "get": _content_op(),
        },
        "/v1/batches": {
            "post": _op(
                "createBatch", "Create a batch from an uploaded batch file; validated in the background.",
                _with_links(_json_response("The Batch object (status validating).", _ref("Batch")), BATCH_LINKS),
                (400, 404, 409, 413, 422, 503),
                parameters=[IDEMPOTENCY_KEY_PARAM],
                requestBody={"required": True,
                             "content": {"application/json": {"schema": _ref("CreateBatchRequest")}}},
            ),
            "get": _op(
                "listBatches", "List this key's batches, newest first.",
                _json_response("A page of batches.", _ref("BatchList")), (400,),
                parameters=[
                    _param("after", "query", AFTER, "Id of the last batch of the previous page (one of yours)."),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                           "Page size."),
                ],
            ),
        },
        "/v1/batches/{batch_id}": {
            "parameters": [BATCH_ID_PARAM],
            "get": _op("retrieveBatch", "A Batch object.", _json_response("The Batch.", _ref("Batch")), (404,)),
            "delete": _op("deleteBatch", "Cancel alias (Mithril): answers {message}.",
                          _json_response("Cancel requested.", _ref("BatchDeleted")), (404, 409, 503)),
        },
        "/v1/batches/{batch_id}/cancel": {
            "parameters": [BATCH_ID_PARAM],
            "post": _op("cancelBatch", "Cancel a batch (409 once it finished).",
                        _json_response("The Batch (cancelling or cancelled).", _ref("Batch")), (404, 409, 503)),
        },
        "/v1/model-config": {"get": _op("modelConfig", "Models from models.yaml (Mithril's shape).",
                                        _json_response("Models.", _ref("ModelConfigList")), ())},
        "/v1/models": {"get": _op("listModels", "Models in OpenAI's shape.",
                                  _json_response("Models.", _ref("ModelList")), ())},
        "/metrics": {"get": _op(
            "metrics", "Prometheus metrics of the whole server (any API key, or RUNNER_METRICS_TOKEN).", {
                "description": "Prometheus text exposition (prometheus_client).", "headers": _REQUEST_ID,
                "content": {"text/plain": {"schema": {"type": "string"}}}}, ())},
        "/openapi.json": {"get": {**_op("openapi", "This document.", {
            "description": "OpenAPI document.", "headers": _REQUEST_ID,
            "content": {"application/json": {"schema": {"type": "object"}}}}, ())}},
    }
    paths.update(_webhook_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "runner batch API", "version": "1",
                 "description": "Self-hosted OpenAI-compatible Batch API (files, batches, model-config)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **WEBHOOK_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "One of RUNNER_API_KEYS (none needed on loopback "
                                                          "when no keys are configured)."}},
        },
    }


async def openapi_json(request: Request) -> Response:
    services = getattr(request.app.state, "services", None)
    limit = services.settings.max_upload_bytes if services is not None else None
    return OrjsonResponse(openapi_spec(limit))
