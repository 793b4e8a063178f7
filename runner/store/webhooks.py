"""WebhookStore: owners' webhook endpoints and the durable outbox of batch-ending events.

An ending is enqueued by enqueue_batch_ending() inside the very transaction that moves the batch to
its final status (BatchStore._set_status), in whichever process does it (the engine's writer, the
API's validator or cancel): a committed ending always has its deliveries queued, and a rolled-back
one never has. The API process's delivery worker (runner/api/webhook_delivery.py) drains the outbox.
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
from typing import Any

import orjson

from runner.errors import InvalidRequest, NotFound, clip
from runner.ids import new_event_id, new_webhook_endpoint_id
from runner.store.db import Database

# The events runner sends: a batch's final status -> its event type (OpenAI's names).
EVENT_OF_STATUS = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
EVENT_TYPES = tuple(EVENT_OF_STATUS.values())
OLD_SECRET_GRACE = 24 * 3600  # rotate_secret(keep_old_secret_active_for_24_hours=True)


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes (the HMAC key)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def event_body(event_type: str, batch_id: str, now: int, event_id: str | None = None) -> str:
    return orjson.dumps({"id": event_id or new_event_id(), "object": "event", "type": event_type,
                         "created_at": now, "data": {"id": batch_id}}).decode()


def enqueue_batch_ending(conn: sqlite3.Connection, batch_id: str, status: str, now: int) -> int:
    """Queue the ending's event for every endpoint of the batch's owner that subscribed to it, on
    `conn`'s open transaction. Returns the number of deliveries queued."""
    event_type = EVENT_OF_STATUS.get(status)
    if event_type is None:
        return 0
    endpoints = conn.execute(
        "SELECT e.id FROM webhook_endpoints e JOIN batches b ON b.owner = e.owner WHERE b.id = ?"
        " AND EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = ?)",
        (batch_id, event_type),
    ).fetchall()
    if not endpoints:
        return 0
    event_id = new_event_id()
    body = event_body(event_type, batch_id, now, event_id)
    conn.executemany(
        "INSERT INTO webhook_outbox (event_id, endpoint_id, body, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
        [(event_id, e["id"], body, now, float(now)) for e in endpoints],
    )
    return len(endpoints)


class WebhookStore:
    """Endpoints of every owner (each sees only its own) and the outbox's bookkeeping."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- endpoints (the API) -----------------------------------------------------------------------
    def create(self, owner: str, *, name: str, url: str, event_types: list[str], now: int,
               max_endpoints: int) -> tuple[sqlite3.Row, str]:
        """(the new endpoint, its secret)."""
        endpoint_id, secret = new_webhook_endpoint_id(), new_secret()
        with self.db.transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM webhook_endpoints WHERE owner = ?", (owner,)).fetchone()[0]
            if count >= max_endpoints:
                raise InvalidRequest(f"An owner may have at most {max_endpoints} webhook endpoints "
                                     "(RUNNER_WEBHOOK_MAX_ENDPOINTS); delete one first.",
                                     code="too_many_webhook_endpoints")
            conn.execute(
                "INSERT INTO webhook_endpoints (id, owner, name, url, event_types, secret, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (endpoint_id, owner, name, url, orjson.dumps(event_types).decode(), secret, now, now),
            )
        return self.get(owner, endpoint_id), secret

    def get(self, owner: str, endpoint_id: str) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM webhook_endpoints WHERE id = ? AND owner = ?", (endpoint_id, owner))
        if row is None:
            raise NotFound(f"No such webhook endpoint: {clip(endpoint_id)}", param="webhook_endpoint_id")
        return row

    def list(self, owner: str, *, after: str | None, limit: int) -> tuple[list[sqlite3.Row], bool]:
        params: list[Any] = [owner]
        where = "owner = ?"
        if after:
            cursor = self.db.query_one("SELECT seq FROM webhook_endpoints WHERE id = ? AND owner = ?", (after, owner))
            if cursor is None:
                raise InvalidRequest(f"No such webhook endpoint for 'after': {clip(after)}", param="after",
                                     code="invalid_value")
            where += " AND seq < ?"
            params.append(cursor["seq"])
        rows = self.db.query(f"SELECT * FROM webhook_endpoints WHERE {where} ORDER BY seq DESC LIMIT ?",
                             (*params, limit + 1))
        return rows[:limit], len(rows) > limit

    def update(self, owner: str, endpoint_id: str, changes: dict[str, Any], now: int) -> sqlite3.Row:
        """Apply name/url/event_types. Any update of a disabled endpoint enables it again (its queued
        events are sent from the start of their attempts); updated_at moves only on a real change."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM webhook_endpoints WHERE id = ? AND owner = ?",
                               (endpoint_id, owner)).fetchone()
            if row is None:
                raise NotFound(f"No such webhook endpoint: {clip(endpoint_id)}", param="webhook_endpoint_id")
            values = {k: orjson.dumps(v).decode() if k == "event_types" else v for k, v in changes.items()}
            changed = any(row[k] != v for k, v in values.items())
            if changed:
                sets = ", ".join(f"{k} = ?" for k in values)
                conn.execute(f"UPDATE webhook_endpoints SET {sets}, updated_at = ? WHERE id = ?",
                             (*values.values(), now, endpoint_id))
            if row["status"] != "enabled":
                conn.execute("UPDATE webhook_endpoints SET status = 'enabled', failures = 0, failing_since = NULL,"
                             " disabled_at = NULL WHERE id = ?", (endpoint_id,))
                conn.execute("UPDATE webhook_outbox SET attempts = 0, next_attempt_at = ? WHERE endpoint_id = ?",
                             (float(now), endpoint_id))
        return self.get(owner, endpoint_id)

    def delete(self, owner: str, endpoint_id: str) -> None:
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM webhook_endpoints WHERE id = ? AND owner = ?", (endpoint_id, owner))
            if cur.rowcount != 1:
                raise NotFound(f"No such webhook endpoint: {clip(endpoint_id)}", param="webhook_endpoint_id")
            conn.execute("DELETE FROM webhook_outbox WHERE endpoint_id = ?", (endpoint_id,))

    def rotate_secret(self, owner: str, endpoint_id: str, *, keep_old: bool, now: int) -> tuple[sqlite3.Row, str]:
        secret = new_secret()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT secret FROM webhook_endpoints WHERE id = ? AND owner = ?",
                               (endpoint_id, owner)).fetchone()
            if row is None:
                raise NotFound(f"No such webhook endpoint: {clip(endpoint_id)}", param="webhook_endpoint_id")
            conn.execute(
                "UPDATE webhook_endpoints SET secret = ?, old_secret = ?, old_secret_until = ?, updated_at = ?"
                " WHERE id = ?",
                (secret, row["secret"] if keep_old else None, now + OLD_SECRET_GRACE if keep_old else None, now,
                 endpoint_id),
            )
        return self.get(owner, endpoint_id), secret

    # -- the outbox (the delivery worker) ----------------------------------------------------------
    def due(self, now: float, limit: int, skip: set[int]) -> list[sqlite3.Row]:
        """Deliveries whose time has come, to enabled endpoints, oldest first; `skip`: those in flight."""
        rows = self.db.query(
            "SELECT o.seq, o.event_id, o.endpoint_id, o.body, o.attempts, e.url, e.secret, e.old_secret,"
            " e.old_secret_until FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id"
            " WHERE o.next_attempt_at <= ? AND e.status = 'enabled' ORDER BY o.next_attempt_at LIMIT ?",
            (now, limit + len(skip)),
        )
        return [r for r in rows if r["seq"] not in skip][:limit]

    def delivered(self, seq: int, endpoint_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM webhook_outbox WHERE seq = ?", (seq,))
            conn.execute("UPDATE webhook_endpoints SET failures = 0, failing_since = NULL WHERE id = ?",
                         (endpoint_id,))

    def attempt_failed(self, seq: int, endpoint_id: str, *, error: str, now: float, retry_at: float | None,
                       disable_failures: int, disable_seconds: float) -> bool:
        """Record a failed attempt: retry at `retry_at`, or drop the delivery when it is None (attempts
        used up). The endpoint is disabled once `disable_failures` attempts in a row failed over at
        least `disable_seconds`. True when this attempt disabled it."""
        with self.db.transaction() as conn:
            if retry_at is None:
                conn.execute("DELETE FROM webhook_outbox WHERE seq = ?", (seq,))
            else:
                conn.execute("UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                             " WHERE seq = ?", (retry_at, error[:500], seq))
            conn.execute("UPDATE webhook_endpoints SET failures = failures + 1,"
                         " failing_since = COALESCE(failing_since, ?) WHERE id = ?", (now, endpoint_id))
            cur = conn.execute(
                "UPDATE webhook_endpoints SET status = 'disabled', disabled_at = ? WHERE id = ? AND status = 'enabled'"
                " AND failures >= ? AND ? - failing_since >= ?",
                (int(now), endpoint_id, disable_failures, now, disable_seconds),
            )
            return cur.rowcount == 1

    def pending(self, endpoint_id: str) -> int:
        row = self.db.query_one("SELECT COUNT(*) AS n FROM webhook_outbox WHERE endpoint_id = ?", (endpoint_id,))
        return 0 if row is None else int(row["n"])
