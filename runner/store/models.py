"""ModelStates: the engine's report of each model it was asked to load, and the notice it leaves on
the batches waiting for a model that fails to load. The API reads both (/health, the Batch)."""

from __future__ import annotations

from typing import Any

import orjson

from runner.store.db import Database

# The notices ModelStates owns on a waiting batch; any other (deadline_at_risk, #16) is left as it is.
MODEL_NOTICES = frozenset({"model_load_failed", "model_unhealthy"})


def _set_model_notice(conn: Any, model: str, notice: dict[str, Any] | None) -> None:
    """Replace the model notice in the `errors` of the model's running batches with `notice` (None:
    drop it), keeping their other notices."""
    for r in conn.execute("SELECT id, errors FROM batches WHERE model = ? AND status = 'in_progress'"
                          + (" AND errors IS NOT NULL" if notice is None else ""), (model,)).fetchall():
        kept = [e for e in (orjson.loads(r["errors"]) if r["errors"] else []) if e.get("code") not in MODEL_NOTICES]
        errors = [*kept, notice] if notice is not None else kept
        conn.execute("UPDATE batches SET errors = ? WHERE id = ?",
                     (orjson.dumps(errors).decode() if errors else None, r["id"]))


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
            _set_model_notice(conn, model, None)

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
            _set_model_notice(conn, model, notice)

    def all(self) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT * FROM model_states ORDER BY model")
        return {r["model"]: {"state": r["state"], "error": r["error"], "attempts": r["attempts"],
                             "retry_at": r["retry_at"]} for r in rows}
