"""BatchStore: batch rows, their status machine and the engine's durable progress checkpoints."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from runner.errors import Conflict, InvalidRequest, NotFound
from runner.ids import new_file_id
from runner.store.db import Database
from runner.store.doorbell import BELL_FILE, Doorbell
from runner.store.files import FileStore
from runner.store.stats import add_sample, drop_samples
from runner.store.transitions import STAMP, TERMINAL, check_transition
from runner.store.webhooks import enqueue_batch_ending

# A batch's lines and tokens count against its owner's caps from validation until it ends (#16).
ENQUEUED = ("validating", "in_progress", "finalizing", "cancelling")
# What a validated batch must pass to start, asked inside start()'s transaction: (errors that fail it,
# or None; notices it starts with in its `errors`).
Gate = Callable[[sqlite3.Connection], tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]]


def enqueued(conn: sqlite3.Connection, owner: str) -> tuple[int, int]:
    """(lines, tokens) the owner has enqueued: a batch still validating counts 0 until it starts."""
    row = conn.execute(
        f"SELECT COALESCE(SUM(total), 0), COALESCE(SUM(enqueued_tokens), 0) FROM batches WHERE owner = ?"
        f" AND status IN ({', '.join('?' * len(ENQUEUED))})", (owner, *ENQUEUED)).fetchone()
    return int(row[0]), int(row[1])


def lines_ahead(conn: sqlite3.Connection, model: str) -> int:
    """Lines of the model's running batches not answered yet (a cancelling batch runs none)."""
    row = conn.execute("SELECT COALESCE(SUM(MAX(0, total - completed - failed)), 0) FROM batches"
                       " WHERE model = ? AND status IN ('in_progress', 'finalizing')", (model,)).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class Progress:
    """What the engine has durably written for one batch: the database never points past it."""

    completed: int
    failed: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    output_bytes: int
    error_bytes: int


class BatchStore:
    """Batches of every owner, and the transitions between their statuses."""

    def __init__(self, db: Database, files: FileStore) -> None:
        self.db = db
        self.files = files
        # rung after each commit the engine must act on at once (a start, a cancel): doorbell.py
        self.bell = Doorbell(db.path.parent / BELL_FILE)

    # -- API side ----------------------------------------------------------------------------------
    def create(
        self,
        *,
        batch_id: str,
        owner: str,
        endpoint: str,
        input_file_id: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        output_expires_seconds: int | None,
        now: int,
        expires_at: int,
    ) -> sqlite3.Row:
        with self.db.transaction() as conn:
            f = conn.execute(
                "SELECT purpose FROM files WHERE id = ? AND owner = ? AND deleted_at IS NULL",
                (input_file_id, owner),
            ).fetchone()
            if f is None:
                raise NotFound(f"No such File object: {input_file_id}", param="input_file_id")
            if f["purpose"] != "batch":
                raise InvalidRequest(
                    f"File {input_file_id} has purpose '{f['purpose']}'; a batch input file must be "
                    "uploaded with purpose 'batch'.",
                    param="input_file_id",
                    code="invalid_file_purpose",
                )
            conn.execute(
                "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status,"
                " created_at, expires_at, metadata, output_expires_seconds)"
                " VALUES (?, ?, ?, ?, ?, 'validating', ?, ?, ?, ?)",
                (
                    batch_id,
                    owner,
                    endpoint,
                    input_file_id,
                    completion_window,
                    now,
                    expires_at,
                    None if metadata is None else orjson.dumps(metadata).decode(),
                    output_expires_seconds,
                ),
            )
        return self.get_any_or_raise(batch_id)

    def get(self, owner: str, batch_id: str) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM batches WHERE id = ? AND owner = ?", (batch_id, owner))
        if row is None:
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return row

    def get_any(self, batch_id: str) -> sqlite3.Row | None:
        return self.db.query_one("SELECT * FROM batches WHERE id = ?", (batch_id,))

    def get_any_or_raise(self, batch_id: str) -> sqlite3.Row:
        row = self.get_any(batch_id)
        if row is None:
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return row

    def list(self, owner: str, *, after: str | None, limit: int) -> tuple[list[sqlite3.Row], bool]:
        params: list[Any] = [owner]
        where = "owner = ?"
        if after:
            cursor = self.db.query_one("SELECT seq FROM batches WHERE id = ? AND owner = ?", (after, owner))
            if cursor is None:
                raise InvalidRequest(f"No such Batch object for 'after': {after}", param="after", code="invalid_value")
            where += " AND seq < ?"
            params.append(cursor["seq"])
        rows = self.db.query(
            f"SELECT * FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?", (*params, limit + 1)
        )
        return rows[:limit], len(rows) > limit

    def request_cancel(self, owner: str, batch_id: str, now: int) -> sqlite3.Row:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT status FROM batches WHERE id = ? AND owner = ?", (batch_id, owner)
            ).fetchone()
            if row is None:
                raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
            status = row["status"]
            if status in ("cancelling", "cancelled"):
                pass  # cancelling twice is harmless: answer with the batch as it is
            elif status in TERMINAL or status == "finalizing":
                raise Conflict(
                    f"Cannot cancel a batch with status '{status}'.", param="batch_id", code="batch_not_cancellable"
                )
            else:
                self._set_status(conn, batch_id, status, "cancelling", now)
                if status == "validating":
                    # Nothing ran and no output files exist, so no engine has anything to wind down:
                    # finish the cancel here, or a batch cancelled mid-validation would sit in
                    # `cancelling` forever (the validator skips any batch no longer `validating`).
                    self._set_status(conn, batch_id, "cancelling", "cancelled", now)
        if status not in ("validating", "cancelling", "cancelled"):
            self.bell.ring()  # the engine aborts its lines now, not at its next poll
        return self.get(owner, batch_id)

    # -- validation outcome ------------------------------------------------------------------------
    def start(self, batch_id: str, *, model: str, total: int, now: int, file_expiry_seconds: int,
              enqueued_tokens: int = 0, gate: Gate | None = None) -> bool:
        """validating -> in_progress, creating the (empty) output and error files so the Batch
        carries their ids from the start. False when the batch left `validating` meanwhile, or when
        `gate` refused it (it is then `failed` with the gate's errors). The gate runs in the same
        write transaction as the start, so two batches of one owner validated at once cannot both
        pass a cap that only one fits under."""
        row = self.get_any_or_raise(batch_id)
        if row["status"] != "validating":
            return False
        seconds = row["output_expires_seconds"] or file_expiry_seconds
        out_id, err_id = new_file_id(), new_file_id()
        try:
            for fid in (out_id, err_id):
                self.files.path_of(fid).touch()
            with self.db.transaction() as conn:
                current = conn.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
                if current["status"] != "validating":
                    for fid in (out_id, err_id):
                        self.files.path_of(fid).unlink(missing_ok=True)
                    return False
                refusal, notices = gate(conn) if gate is not None else (None, [])
                if refusal is not None:
                    for fid in (out_id, err_id):
                        self.files.path_of(fid).unlink(missing_ok=True)
                    conn.execute("UPDATE batches SET errors = ?, model = ? WHERE id = ?",
                                 (orjson.dumps(refusal).decode(), model, batch_id))
                    self._set_status(conn, batch_id, "validating", "failed", now)
                    return False
                for fid, kind in ((out_id, "output"), (err_id, "error")):
                    conn.execute(
                        "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, expires_at, status,"
                        " batch_id) VALUES (?, ?, 'batch_output', ?, 0, ?, ?, 'processed', ?)",
                        (fid, row["owner"], f"{batch_id}_{kind}.jsonl", now, now + seconds, batch_id),
                    )
                conn.execute(
                    "UPDATE batches SET model = ?, total = ?, output_file_id = ?, error_file_id = ?,"
                    " enqueued_tokens = ?, errors = ? WHERE id = ?",
                    (model, total, out_id, err_id, enqueued_tokens,
                     orjson.dumps(notices).decode() if notices else None, batch_id),
                )
                self._set_status(conn, batch_id, "validating", "in_progress", now)
        except BaseException:
            # e.g. disk full: no row points at these files, so they must not stay behind (see #6)
            for fid in (out_id, err_id):
                self.files.path_of(fid).unlink(missing_ok=True)
            raise
        self.bell.ring()  # committed: the engine starts feeding it now, not at its next poll
        return True

    def fail_validation(self, batch_id: str, errors: list[dict[str, Any]], now: int, *, model: str | None) -> bool:
        with self.db.transaction() as conn:
            current = conn.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if current is None or current["status"] != "validating":
                return False
            conn.execute(
                "UPDATE batches SET errors = ?, model = ? WHERE id = ?",
                (orjson.dumps(errors).decode(), model, batch_id),
            )
            self._set_status(conn, batch_id, "validating", "failed", now)
        return True

    def validating(self) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM batches WHERE status = 'validating' ORDER BY seq")

    # -- engine side -------------------------------------------------------------------------------
    def changed_since(self, version: int) -> tuple[bool, int]:
        """(whether another connection committed since `version`, the version now)."""
        now = self.db.data_version()
        return now != version, now

    def active(self) -> list[sqlite3.Row]:
        """Batches the engine must work on: running ones and ones waiting to be cancelled, oldest first."""
        return self.db.query(
            "SELECT * FROM batches WHERE status IN ('in_progress', 'cancelling', 'finalizing') ORDER BY seq"
        )

    def checkpoint(self, batch_id: str, p: Progress) -> None:
        """Record progress after the output and error files were fsynced up to the given sizes."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT output_file_id, error_file_id FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            conn.execute(
                "UPDATE batches SET completed = ?, failed = ?, input_tokens = ?, cached_tokens = ?,"
                " output_tokens = ?, reasoning_tokens = ? WHERE id = ?",
                (p.completed, p.failed, p.input_tokens, p.cached_tokens, p.output_tokens,
                 p.reasoning_tokens, batch_id),
            )
            conn.execute("UPDATE files SET bytes = ? WHERE id = ?", (p.output_bytes, row["output_file_id"]))
            conn.execute("UPDATE files SET bytes = ? WHERE id = ?", (p.error_bytes, row["error_file_id"]))
            # the live throughput's samples (stats.py), committed with the counts they sample
            add_sample(conn, batch_id, p.completed + p.failed, p.output_tokens, time.time())

    def durable_sizes(self, batch_id: str) -> tuple[int, int]:
        row = self.db.query_one(
            "SELECT o.bytes AS ob, e.bytes AS eb FROM batches b JOIN files o ON o.id = b.output_file_id"
            " JOIN files e ON e.id = b.error_file_id WHERE b.id = ?",
            (batch_id,),
        )
        return (0, 0) if row is None else (int(row["ob"]), int(row["eb"]))

    def transition(self, batch_id: str, new: str, now: int, *, errors: list[dict[str, Any]] | None = None) -> None:
        """Move the batch to `new`; `errors` (if given) becomes its `errors` in the same transaction."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
            self._set_status(conn, batch_id, row["status"], new, now)
            if errors is not None:
                conn.execute("UPDATE batches SET errors = ? WHERE id = ?", (orjson.dumps(errors).decode(), batch_id))

    @staticmethod
    def _set_status(conn: sqlite3.Connection, batch_id: str, current: str, new: str, now: int) -> None:
        check_transition(current, new, batch_id)
        column = STAMP[new]
        cur = conn.execute(
            f"UPDATE batches SET status = ?, {column} = ? WHERE id = ? AND status = ?",
            (new, now, batch_id, current),
        )
        if cur.rowcount != 1:
            raise Conflict(f"Batch {batch_id} changed status concurrently.", code="invalid_status_transition")
        if new in TERMINAL:
            drop_samples(conn, batch_id)  # throughput is null from now on
            # In this same transaction: the webhook events of an ending commit (or roll back) with it.
            enqueue_batch_ending(conn, batch_id, new, now)
