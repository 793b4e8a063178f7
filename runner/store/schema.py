"""The schema: one idempotent script, versioned with PRAGMA user_version."""

SCHEMA_VERSION = 4

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
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
    enqueued_tokens   INTEGER NOT NULL DEFAULT 0   -- version 4: the input tokens counted at validation (quotas)
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

-- Webhook endpoints (version 3): per owner, as the openai SDK's client.webhooks manages them.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,
    name             TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,     -- JSON list of event types
    secret           TEXT NOT NULL,     -- whsec_...: kept, since every delivery is signed with it
    old_secret       TEXT,              -- after rotate_secret(keep_old_secret_active_for_24_hours)
    old_secret_until INTEGER,           -- unix time the old secret stops signing
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'enabled',   -- enabled | disabled (kept failing)
    failures         INTEGER NOT NULL DEFAULT 0,        -- failed delivery attempts in a row
    failing_since    REAL,                              -- unix time of the streak's first failure
    disabled_at      INTEGER
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_owner ON webhook_endpoints (owner, seq);

-- The durable outbox: one row per (event, endpoint) still to deliver, written in the transaction that
-- ends the batch; deleted once a 2xx came back (or the attempts ran out).
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL,     -- evt_...: the webhook-id header, the same on every attempt
    endpoint_id      TEXT NOT NULL,
    body             TEXT NOT NULL,     -- fixed at enqueue, so every attempt signs the same bytes
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at);

-- Live throughput (version 3): the engine's writer adds (time, lines answered, output tokens) for a
-- running batch at its checkpoints, at most one a second; the API derives lines/s, tokens/s and the
-- ETA over the last minute. Older samples are pruned as new ones come; all go when the batch ends.
CREATE TABLE IF NOT EXISTS batch_samples (
    batch_id       TEXT NOT NULL,
    at             REAL NOT NULL,      -- unix time (both processes read the same clock)
    done           INTEGER NOT NULL,   -- completed + failed
    output_tokens  INTEGER NOT NULL,
    PRIMARY KEY (batch_id, at)
);

-- What only the engine process knows, for GET /metrics (version 3): one row per key, replaced when it
-- changes: 'in_flight' (JSON {model: lines}), 'vllm' (vLLM's own metrics, Prometheus text).
CREATE TABLE IF NOT EXISTS engine_report (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);

-- Every model load the engine finished (version 3), ok or not: runner_model_loads_total and
-- runner_model_load_seconds count from these rows, so they survive engine restarts.
CREATE TABLE IF NOT EXISTS model_loads (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    model    TEXT NOT NULL,
    ok       INTEGER NOT NULL,
    seconds  REAL NOT NULL,
    at       REAL NOT NULL
);

-- Idempotency-Key (version 4): the first answer to POST /v1/batches or /v1/files under a key, per owner,
-- replayed for 24 h to a retry with the same body; another body under the same key is refused.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner       TEXT NOT NULL,
    route       TEXT NOT NULL,      -- 'POST /v1/batches' | 'POST /v1/files'
    key         TEXT NOT NULL,
    body_hash   TEXT NOT NULL,      -- sha256 of what the request sent
    status      INTEGER,            -- NULL while the first request is still being answered
    response    TEXT,               -- the first answer's JSON body
    created_at  REAL NOT NULL,
    PRIMARY KEY (owner, route, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
"""

# Columns added after a table was first created: CREATE TABLE IF NOT EXISTS leaves an older table as it
# was, so each is added by ALTER TABLE where it is missing (db.py), in version order.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("batches", "enqueued_tokens", "INTEGER NOT NULL DEFAULT 0"),  # version 4
)
