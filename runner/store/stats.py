"""Stats: throughput samples of running batches, the engine's report, and model loads.

The engine writes (its writer thread), the API reads (GET /metrics, the Batch's `throughput`). The
counters GET /metrics shows come from durable rows (the batches' checkpointed counts, model_loads),
so they never go back when the engine restarts; only what the engine alone knows right now (lines in
flight, vLLM's own metrics) travels through engine_report.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from runner.store.db import Database

SAMPLE_EVERY = 1.0  # seconds between two samples of one batch
WINDOW = 60.0  # seconds of samples the rates are measured over
STALE_GRACE = 5.0  # a batch with no sample for longer is slowing down: its rates decay toward 0
KEEP = WINDOW + 30.0  # samples older than this are pruned


def add_sample(conn: sqlite3.Connection, batch_id: str, done: int, output_tokens: int, now: float) -> None:
    """In the checkpoint's transaction: one sample per SAMPLE_EVERY at most, old ones pruned."""
    last = conn.execute("SELECT MAX(at) FROM batch_samples WHERE batch_id = ?", (batch_id,)).fetchone()[0]
    if last is not None and now - last < SAMPLE_EVERY:
        return
    conn.execute("INSERT OR REPLACE INTO batch_samples (batch_id, at, done, output_tokens) VALUES (?, ?, ?, ?)",
                 (batch_id, now, done, output_tokens))
    conn.execute("DELETE FROM batch_samples WHERE batch_id = ? AND at < ?", (batch_id, now - KEEP))


def drop_samples(conn: sqlite3.Connection, batch_id: str) -> None:
    conn.execute("DELETE FROM batch_samples WHERE batch_id = ?", (batch_id,))


def throughput(samples: Sequence[tuple[float, int, int]], remaining: int, now: float) -> dict[str, Any] | None:
    """{lines_per_second, output_tokens_per_second, eta_seconds} from (at, done, output_tokens)
    samples in time order, over the last WINDOW seconds; None before two samples exist.

    The span runs to the last sample while samples keep coming; once none came for STALE_GRACE
    seconds it runs to now, so a stalled batch's rates fall instead of staying at their last value."""
    recent = [s for s in samples if s[0] >= now - WINDOW]
    if len(recent) < 2:
        return None
    first, last = recent[0], recent[-1]
    span = max(last[0] - first[0], now - first[0] - STALE_GRACE)
    if span <= 0:
        return None
    lines = max(0, last[1] - first[1]) / span
    tokens = max(0, last[2] - first[2]) / span
    eta = round(max(0, remaining) / lines, 1) if lines > 0 else None
    return {"lines_per_second": round(lines, 3), "output_tokens_per_second": round(tokens, 3), "eta_seconds": eta}


FINISHED_SPAN = 20  # finished batches a model's rate is measured over when none of its batches runs


def model_rate(conn: sqlite3.Connection, model: str, now: float) -> float | None:
    """Lines/s the engine does on `model`, for the deadline check at validation (#16); None when
    nothing was measured. While batches of the model run: the sum of their live rates (the engine
    shares one model's throughput among them). Else from its last FINISHED_SPAN completed batches:
    lines answered over the union of their in_progress_at..completed_at spans (they may overlap;
    stamps are whole seconds, so a batch done within its start's second measures nothing)."""
    live = 0.0
    for r in conn.execute("SELECT id, total, completed, failed FROM batches WHERE model = ?"
                          " AND status = 'in_progress'", (model,)).fetchall():
        samples = [(float(s[0]), int(s[1]), int(s[2])) for s in conn.execute(
            "SELECT at, done, output_tokens FROM batch_samples WHERE batch_id = ? AND at >= ? ORDER BY at",
            (r["id"], now - WINDOW))]
        rate = throughput(samples, int(r["total"]) - int(r["completed"]) - int(r["failed"]), now)
        live += rate["lines_per_second"] if rate else 0.0
    if live > 0:
        return live
    spans = sorted((int(r[0]), int(r[1]), int(r[2])) for r in conn.execute(
        "SELECT in_progress_at, completed_at, completed + failed FROM batches WHERE model = ? AND status ="
        " 'completed' AND in_progress_at IS NOT NULL AND completed_at > in_progress_at ORDER BY seq DESC LIMIT ?",
        (model, FINISHED_SPAN)))
    lines = seconds = 0
    end = None
    for start, stop, done in spans:
        lines += done
        if end is None or start >= end:
            seconds += stop - start
            end = stop
        elif stop > end:
            seconds += stop - end
            end = stop
    return lines / seconds if seconds > 0 and lines > 0 else None


class StatsStore:
    """The stats tables of one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- engine side -------------------------------------------------------------------------------
    def report(self, key: str, value: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO engine_report (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                         " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at", (key, value, now))

    def model_loads(self, loads: Iterable[tuple[str, bool, float, float]]) -> None:
        """(model, ok, seconds, at) rows."""
        with self.db.transaction() as conn:
            conn.executemany("INSERT INTO model_loads (model, ok, seconds, at) VALUES (?, ?, ?, ?)",
                             [(m, int(ok), s, at) for m, ok, s, at in loads])

    # -- API side ----------------------------------------------------------------------------------
    def throughputs(self, rows: Sequence[sqlite3.Row], now: float | None = None) -> dict[str, dict[str, Any] | None]:
        """Each in_progress batch's throughput, in one query for all of `rows` (a list page)."""
        running = {r["id"]: r for r in rows if r["status"] == "in_progress"}
        if not running:
            return {}
        now = time.time() if now is None else now
        marks = ",".join("?" * len(running))
        found: dict[str, list[tuple[float, int, int]]] = {bid: [] for bid in running}
        for s in self.db.query(f"SELECT batch_id, at, done, output_tokens FROM batch_samples WHERE batch_id IN"
                               f" ({marks}) AND at >= ? ORDER BY batch_id, at", (*running, now - WINDOW)):
            found[s["batch_id"]].append((float(s["at"]), int(s["done"]), int(s["output_tokens"])))
        out: dict[str, dict[str, Any] | None] = {}
        for bid, r in running.items():
            out[bid] = throughput(found[bid], int(r["total"]) - int(r["completed"]) - int(r["failed"]), now)
        return out

    def snapshot(self) -> dict[str, Any]:
        """What GET /metrics shows from the store, in a few aggregate queries."""
        per_model = self.db.query(
            "SELECT COALESCE(model, '') AS model, SUM(completed) AS completed, SUM(failed) AS failed,"
            " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,"
            " SUM(CASE WHEN status IN ('in_progress', 'cancelling', 'finalizing')"
            "     THEN MAX(0, total - completed - failed) ELSE 0 END) AS pending"
            " FROM batches WHERE model IS NOT NULL GROUP BY model ORDER BY model")
        statuses = self.db.query("SELECT status, COUNT(*) AS n FROM batches GROUP BY status")
        loads = self.db.query("SELECT model, ok, seconds FROM model_loads ORDER BY seq")
        report = {r["key"]: r["value"] for r in self.db.query("SELECT key, value FROM engine_report")}
        return {
            "models": [dict(r) for r in per_model],
            "statuses": {r["status"]: int(r["n"]) for r in statuses},
            "loads": [(r["model"], bool(r["ok"]), float(r["seconds"])) for r in loads],
            "in_flight": orjson.loads(report["in_flight"]) if "in_flight" in report else {},
            "vllm": report.get("vllm", ""),
        }
