"""Every error `code` runner sends, with the one condition it names: one code per condition (#12).

API errors (errors.py's ApiError classes and their `code=`), batch validation errors (the Batch's
`errors.data`), line errors (rows of the error file) and notices on a Batch all draw from this
list. tests/test_error_codes.py scans the source: a code used anywhere must be listed here, and
every code listed must be used, so a second code for a condition already named shows up in review
as a new line below.
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # -- HTTP requests (the API) ---------------------------------------------------------------------
    "missing_api_key": "no Authorization bearer key was sent",
    "invalid_api_key": "the bearer key is not one of RUNNER_API_KEYS",
    "permission_denied": "the key may not do this",
    "not_found": "no such object (also another owner's)",
    "unknown_url": "no API route at this path",
    "method_not_allowed": "the route exists, the HTTP method does not",
    "conflict": "the request conflicts with the object's state (generic 409)",
    "invalid_status_transition": "a batch status change the state machine forbids",
    "batch_not_cancellable": "cancel of a batch that already ended",
    "file_in_use": "delete of a file a running batch still reads",
    "range_not_satisfiable": "a download's Range starts at or past the end of the file (416)",
    "file_too_large": "an upload over RUNNER_MAX_FILE_BYTES",
    "body_too_large": "a JSON request body over the limit",
    "rate_limit_exceeded": "too many requests from this key",
    "request_header_too_large": "a request line plus headers over RUNNER_MAX_HEADER_BYTES (431)",
    "request_timeout": "a head not in within RUNNER_HEADER_TIMEOUT, or a body silent for RUNNER_BODY_TIMEOUT (408)",
    "duplicate_authorization": "the API key sent twice: two Authorization (or x-api-key) headers (400)",
    "too_many_uploads": "RUNNER_MAX_CONCURRENT_UPLOADS uploads are already being received (503, Retry-After)",
    "too_many_connections": "RUNNER_MAX_CONNECTIONS connections are already open (503, Retry-After)",
    "service_unavailable": "the server cannot take this now; retry (generic 503)",
    "shutting_down": "the server is stopping; retry",
    "disk_full": "no space left for the upload or the rows",
    "database_busy": "another process holds the database's write lock past RUNNER_DB_BUSY_TIMEOUT; retry",
    "internal_error": "an unexpected exception in runner (a bug): the request or line may be retried",
    "invalid_json": "a request body or input line that is not JSON",
    "invalid_utf8": "bytes that are not UTF-8: an input line, a JSON request body, an upload's form field",
    "invalid_value": "a parameter with a value out of its range or of the wrong type (OpenAI's invalid_type too)",
    "missing_required_parameter": "a required parameter is absent",
    "unknown_parameter": "a parameter (API request or line body field) the endpoint does not take",
    "invalid_metadata": "batch metadata that breaks OpenAI's limits (16 keys, 64/512 chars)",
    "invalid_multipart": "an upload that is not a well-formed multipart form",
    "invalid_content_type": "a body whose Content-Type the route does not take",
    "missing_file": "an upload without its `file` part",
    "missing_purpose": "an upload without `purpose`",
    "invalid_purpose": "a `purpose` runner does not know",
    "invalid_file_purpose": "a batch created from a file whose purpose is not `batch`",
    "invalid_endpoint": "a batch's `endpoint` that is not a batch endpoint",
    "invalid_completion_window": "a completion_window other than those allowed",
    "invalid_webhook_url": "a webhook endpoint's url that is not a bounded http(s) URL with a host",
    "too_many_webhook_endpoints": "a webhook endpoint created past RUNNER_WEBHOOK_MAX_ENDPOINTS for the owner",
    "webhook_unreachable": "a webhook test event that could not be delivered (no connection, timeout, not HTTP)",
    # -- batch validation (Batch.errors.data, each with its line) ------------------------------------
    "empty_file": "the input file has no lines",
    "too_many_requests": "more lines than RUNNER_MAX_BATCH_LINES (OpenAI's 50,000 by default)",
    "file_unreadable": "the input file cannot be read",
    "file_not_found": "a running batch's input file is gone",
    "file_damaged": "a stored file whose size or content differs from what the database recorded (cut or changed)",
    "too_many_errors": "validation stopped listing problems (more follow than are shown)",
    "line_too_long": "an input line over RUNNER_MAX_LINE_BYTES",
    "invalid_request": "an input line that is JSON but not an object",
    "missing_custom_id": "an input line without custom_id",
    "invalid_custom_id": "a custom_id that is not a non-empty string",
    "duplicate_custom_id": "a custom_id used by an earlier line of the file",
    "invalid_method": "a line whose method is not POST",
    "missing_url": "a line without url",
    "invalid_url": "a line's url (or endpoint) that is not a batch endpoint",
    "mismatched_url": "a line's url that differs from the batch's endpoint",
    "invalid_body": "a line's body (or a JSON request body) that is not a JSON object",
    "missing_model": "a line's body without model",
    "mixed_models": "lines naming more than one model in one batch",
    "model_not_found": "a model this server (or run) does not serve",
    "model_endpoint_mismatch": "a model that does not serve the line's endpoint",
    "model_not_multimodal": "an image, audio, video or file part for a model that takes text only",
    "stream_unsupported": "stream: true in a batch line",
    "unsupported_parameter": "a parameter (or JSON Schema keyword) the line's backend cannot honour",
    # -- lines, in the error file --------------------------------------------------------------------
    "context_length_exceeded": "prompt plus max_tokens over the model's context",
    "chat_template_missing": "a chat line for a model without a chat template",
    "model_not_loaded": "the line's model is not loaded (unloaded under it); it may be retried",
    "engine_error": "the engine failed or lost this request; it may be retried",
    "batch_cancelled": "the batch was cancelled before this line ran",
    "batch_expired": "the batch's completion window ended before this line ran",
    # -- notices on a waiting Batch (errors.data) and in /health -------------------------------------
    "model_load_failed": "the batch's model failed to load; it is retried after a backoff",
    "model_unhealthy": "the model was stopped after a run of 5xx rows; it is reloaded after a backoff",
    # -- /health reasons (status unhealthy, 503) -----------------------------------------------------
    "engine_frozen": "the engine's heartbeat (or its writer thread) stopped past RUNNER_ENGINE_STALL_TIMEOUT",
    "engine_crash_loop": "the engine restarted 3 times within RUNNER_ENGINE_CRASH_LOOP_WINDOW",
    "engine_no_progress": "batches pending, no line finished for RUNNER_ENGINE_PROGRESS_TIMEOUT",
    "engine_waiting_for_lock": "the engine waits for engine.lock, held by another process",
}
