"""The schema: one idempotent script, versioned with PRAGMA user_version."""

SCHEMA_VERSION = 2

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS files (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    owner        TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    filename     TEXT NOT NULL,
    bytes        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    status       TEXT NOT NULL DEFAULT 'processed',
    batch_id     TEXT,            -- set on output and error files: the batch writing them
    deleted_at   INTEGER          -- tombstone: kept so pagination cursors stay resolvable
);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, seq);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS batches (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    owner             TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    model             TEXT,
    input_file_id     TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status            TEXT NOT NULL,
    output_file_id    TEXT,
    error_file_id     TEXT,
    created_at        INTEGER NOT NULL,
    in_progress_at    INTEGER,
    expires_at        INTEGER,
    finalizing_at     INTEGER,
    completed_at      INTEGER,
    failed_at         INTEGER,
    expired_at        INTEGER,
    cancelling_at     INTEGER,
    cancelled_at      INTEGER,
    errors            TEXT,        -- JSON list of {code, message, param, line}
    metadata          TEXT,        -- JSON object or NULL
    output_expires_seconds INTEGER,
    total             INTEGER NOT NULL DEFAULT 0,
    completed         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, seq);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status);

-- What the engine reports about the models it was asked to load (version 2); /health shows it.
CREATE TABLE IF NOT EXISTS model_states (
    model       TEXT PRIMARY KEY,
    state       TEXT NOT NULL,      -- loaded | load_failed | stopped
    error       TEXT,               -- the last load error (bounded)
    attempts    INTEGER NOT NULL DEFAULT 0,   -- failed loads in a row
    retry_at    REAL,               -- unix time of the next load attempt
    updated_at  REAL NOT NULL
);
"""
