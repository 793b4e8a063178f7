"""IdempotencyStore: the first answer to a create under an Idempotency-Key, per owner and route.

A request with a key first *claims* it: one row with status NULL, inserted in the same write
transaction that looked for an earlier one, so of two identical requests at once exactly one does
the work. The claim is then either completed (the answer's status and body are kept, to be
replayed for KEY_TTL seconds) or released (the row is deleted: a request that failed did not
happen, and its retry runs afresh).

A claim whose request died with its process (a crash, a kill -9) would hold the key forever, so a
NULL row is taken over when it is older than CLAIM_TIMEOUT or older than this API process: creates
answer in well under a second (a file's bytes are on disk before its key is claimed), and one
runner serve is the only API process on its data dir.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from runner.store.db import Database

KEY_TTL = 24 * 3600  # seconds a completed answer is replayed; rows older are swept
CLAIM_TIMEOUT = 300.0  # seconds after which an unanswered claim is taken to be a dead request's


@dataclass(frozen=True)
class Claim:
    """What claim() found. outcome: 'claimed' (do the work, then complete() or release() with
    `token`), 'replay' (status and response are the first answer), 'reused' (the key was used with
    another body), 'in_use' (the first request with the key is still being answered)."""

    outcome: str
    token: float = 0.0
    status: int | None = None
    response: str | None = None


class IdempotencyStore:
    """Rows of table idempotency_keys; `started_at` is this API process's start (unix time)."""

    def __init__(self, db: Database, *, started_at: float) -> None:
        self.db = db
        self.started_at = started_at

    def _stale(self, row: sqlite3.Row, now: float) -> bool:
        if row["created_at"] <= now - KEY_TTL:
            return True  # expired: not swept yet, but no longer replayed
        if row["status"] is None:
            return row["created_at"] <= now - CLAIM_TIMEOUT or row["created_at"] < self.started_at
        return False

    def claim(self, owner: str, route: str, key: str, body_hash: str, now: float) -> Claim:
        where = (owner, route, key)
        with self.db.transaction() as conn:  # BEGIN IMMEDIATE: the look and the insert are one step
            row = conn.execute("SELECT body_hash, status, response, created_at FROM idempotency_keys"
                               " WHERE owner = ? AND route = ? AND key = ?", where).fetchone()
            if row is not None and self._stale(row, now):
                conn.execute("DELETE FROM idempotency_keys WHERE owner = ? AND route = ? AND key = ?", where)
                row = None
            if row is None:
                conn.execute("INSERT INTO idempotency_keys (owner, route, key, body_hash, status, response, created_at)"
                             " VALUES (?, ?, ?, ?, NULL, NULL, ?)", (*where, body_hash, now))
                return Claim("claimed", token=now)
        # Another body under the same key is the client's mistake whether or not the first is done.
        if row["body_hash"] != body_hash:
            return Claim("reused")
        if row["status"] is None:
            return Claim("in_use")
        return Claim("replay", status=int(row["status"]), response=str(row["response"]))

    def complete(self, owner: str, route: str, key: str, token: float, status: int, response: str) -> bool:
        """Keep the answer of the claim `token`; False when the claim was taken over meanwhile."""
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE idempotency_keys SET status = ?, response = ? WHERE owner = ? AND route = ?"
                               " AND key = ? AND created_at = ? AND status IS NULL",
                               (status, response, owner, route, key, token))
            return cur.rowcount == 1

    def release(self, owner: str, route: str, key: str, token: float) -> None:
        """Forget the claim `token` (its request failed): the next request with the key runs afresh."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM idempotency_keys WHERE owner = ? AND route = ? AND key = ? AND created_at = ?"
                         " AND status IS NULL", (owner, route, key, token))

    def forget(self, owner: str, route: str, key: str) -> None:
        """Forget a kept answer (its object was deleted since): the next request with the key runs afresh."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM idempotency_keys WHERE owner = ? AND route = ? AND key = ?"
                         " AND status IS NOT NULL", (owner, route, key))

    def sweep(self, now: float) -> int:
        """Delete the rows older than KEY_TTL; returns how many."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (now - KEY_TTL,)).rowcount
