"""ModelStates: the engine's report of each model it was asked to load, and the notice it leaves on
the batches waiting for a model that fails to load. The API reads both (/health, the Batch)."""

from __future__ import annotations

from typing import Any

import orjson

from runner.store.db import Database


class ModelStates:
    """Rows of model_states, written by the engine's feeder, read by /health."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def reset(self) -> None:
        """A new engine process holds no model: forget what the previous one reported."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM model_states")

    def loaded(self, model: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO model_states (model, state, error, attempts, retry_at, updated_at)"
                " VALUES (?, 'loaded', NULL, 0, NULL, ?) ON CONFLICT (model) DO UPDATE SET"
                " state = 'loaded', error = NULL, attempts = 0, retry_at = NULL, updated_at = excluded.updated_at",
                (model, now),
            )
            conn.execute("UPDATE batches SET errors = NULL WHERE model = ? AND status = 'in_progress'", (model,))

    def unloaded(self, model: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM model_states WHERE model = ? AND state = 'loaded'", (model,))

    def load_failed(self, model: str, notice: dict[str, Any], *, error: str, attempts: int, retry_at: float,
                    now: float, state: str = "load_failed") -> None:
        """Record the failure (`state` load_failed, or stopped after a run of 5xx rows), and put
        `notice` (one Batch `errors` entry) on the model's running batches."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO model_states (model, state, error, attempts, retry_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET"
                " state = excluded.state, error = excluded.error, attempts = excluded.attempts,"
                " retry_at = excluded.retry_at, updated_at = excluded.updated_at",
                (model, state, error, attempts, retry_at, now),
            )
            conn.execute("UPDATE batches SET errors = ? WHERE model = ? AND status = 'in_progress'",
                         (orjson.dumps([notice]).decode(), model))

    def all(self) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT * FROM model_states ORDER BY model")
        return {r["model"]: {"state": r["state"], "error": r["error"], "attempts": r["attempts"],
                             "retry_at": r["retry_at"]} for r in rows}
