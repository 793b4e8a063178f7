"""The schema upgrades a data dir made by an older runner in place (columns added since, new tables)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runner.store import Database
from runner.store.schema import ADDED_COLUMNS, SCHEMA_VERSION


def test_an_older_database_gets_the_new_columns_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "runner.db"
    Database(path).close()
    old = sqlite3.connect(path)  # make it what a version-3 runner left: no enqueued_tokens, no idempotency
    old.execute("ALTER TABLE batches DROP COLUMN enqueued_tokens")
    old.execute("DROP TABLE idempotency_keys")
    old.execute("INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status, created_at)"
                " VALUES ('batch_old', 'o', '/v1/chat/completions', 'file-x', '24h', 'completed', 1)")
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()

    db = Database(path)
    conn = db.connection()
    for table, column, _ in ADDED_COLUMNS:
        assert column in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
    row = conn.execute("SELECT enqueued_tokens FROM batches WHERE id = 'batch_old'").fetchone()
    assert row["enqueued_tokens"] == 0  # the old row keeps its data and gets the default
    assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    Database(path).close()  # a second open finds nothing to add and does not fail
