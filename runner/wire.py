"""Wire shapes: store rows -> OpenAI File and Batch objects, output rows, list pages.

Field names are spelled exactly as OpenAI's API (and vLLM's run_batch.py for lines) spell them.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import orjson

from runner.model_specs import ModelSpec

# status "error": the server found the file's bytes on disk not what it recorded (store/files.py).
DAMAGED_DETAILS = ("The file's bytes on the server's disk are not the bytes recorded (cut short, changed or "
                   "missing); downloads answer file_damaged. Upload it again, or run its batch again.")


def file_object(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": int(row["bytes"]),
        "created_at": int(row["created_at"]),
        "expires_at": None if row["expires_at"] is None else int(row["expires_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
        "status_details": DAMAGED_DETAILS if row["status"] == "error" else None,
    }


def batch_object(row: sqlite3.Row, throughput: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's Batch, plus runner's `throughput` (null unless in_progress and measured; see
    store/stats.py): an extra field, which the openai SDK keeps (batch.model_extra)."""
    errors = orjson.loads(row["errors"]) if row["errors"] else None
    return {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "model": row["model"],
        "errors": None if errors is None else {"object": "list", "data": errors},
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "in_progress_at": row["in_progress_at"],
        "expires_at": row["expires_at"],
        "finalizing_at": row["finalizing_at"],
        "completed_at": row["completed_at"],
        "failed_at": row["failed_at"],
        "expired_at": row["expired_at"],
        "cancelling_at": row["cancelling_at"],
        "cancelled_at": row["cancelled_at"],
        "request_counts": {
            "total": row["total"],
            "completed": row["completed"],
            "failed": row["failed"],
        },
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None,
        "usage": {
            "input_tokens": row["input_tokens"],
            "input_tokens_details": {"cached_tokens": row["cached_tokens"]},
            "output_tokens": row["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": row["reasoning_tokens"]},
            "total_tokens": row["input_tokens"] + row["output_tokens"],
        },
        "throughput": throughput,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _iso_now(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_config_object(spec: ModelSpec, loaded_at: float) -> dict[str, Any]:
    """One entry of Mithril's GET /v1/model-config, from models.yaml."""
    c = spec.config
    stamp = _iso_now(loaded_at)
    return {
        "id": spec.id,
        "name": c["name"],
        "description": c["description"],
        "input_price_cents": c["input_price_cents"],
        "output_price_cents": c["output_price_cents"],
        "model_code": c["model_code"],
        "num_parameters_billions": c["num_parameters_billions"],
        "num_experts": c["num_experts"],
        "context_length": c["context_length"],
        "display_order": c["display_order"],
        "license_url": c["license_url"],
        "created_at": spec.created_at or stamp,
        "updated_at": spec.updated_at or stamp,
        "status": c["status"],
        "endpoints": list(spec.endpoints),  # the batch endpoints this model serves
    }


def model_object(spec: ModelSpec, created: int) -> dict[str, Any]:
    # endpoints: which batch endpoints the model serves (an extension; OpenAI's Model has no such key)
    return {"id": spec.id, "object": "model", "created": created, "owned_by": "runner",
            "endpoints": list(spec.endpoints)}


def output_line(line_id: str, custom_id: str, status_code: int, request_id: str, body: Any) -> dict[str, Any]:
    """A row of the output or error file for a line that got an HTTP-style response."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(line_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A row of the error file for a line that never ran (cancelled, expired)."""
    return {"id": line_id, "custom_id": custom_id, "response": None, "error": {"code": code, "message": message}}


CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
