"""Database: one SQLite file in WAL mode, a connection per thread, short BEGIN IMMEDIATE writes.

The API process and the engine process both open the same file; WAL lets readers go on while one
writer commits, and busy_timeout makes a writer wait for the other process instead of failing.
The engine waits long (30 s: its writes must land); the API waits RUNNER_DB_BUSY_TIMEOUT and then
answers 503 database_busy with Retry-After (StoreBusy), so a frozen engine holding the write lock
costs clients a quick retry, never a 500 after 30 s (#14).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.errors import StoreBusy, StoreClosed
from runner.store.schema import ADDED_COLUMNS, SCHEMA_SQL, SCHEMA_VERSION

logger = logging.getLogger(__name__)

# How SQLite words "another connection holds the lock" once busy_timeout has run out.
_BUSY = ("database is locked", "database is busy", "database table is locked")


def _busy(exc: sqlite3.OperationalError) -> bool:
    return not isinstance(exc, StoreBusy) and any(m in str(exc).lower() for m in _BUSY)


class Database:
    """A SQLite file shared by the API and engine processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Uses in progress, so close() can wait for them: closing a connection that another thread is
        # still stepping crashes the process inside SQLite (a segfault, not an exception).
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._closed = False
        conn = self.connection()
        # The schema at startup may wait the long way: a server should start behind a busy engine.
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(SCHEMA_SQL)
        for table, column, decl in ADDED_COLUMNS:  # a data dir made by an older runner
            have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit fsyncs the WAL before it returns, so a row is on disk before the API
            # answers 2xx for it. NORMAL left the WAL to the next checkpoint, and a power cut rolled
            # acknowledged uploads, creates and cancels back (#14). Costs one fsync per write.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, counted as in use until the block ends."""
        with self._lock:
            if self._closed:
                raise StoreClosed(f"the store {self.path} is closed")
            self._active += 1
        try:
            yield self.connection()
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                retry = max(1, round(self.busy_timeout))
                raise StoreBusy("The database is busy (another process holds its write lock); retry in "
                                f"{retry} s.", headers={"retry-after": str(retry)}) from exc
            raise
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so no read-then-write races."""
        with self._use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._use() as conn:
            return conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        with self._use() as conn:
            row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
            return row

    def data_version(self) -> int:
        """A number that changes when another connection commits: a cheap 'did anything happen?'"""
        with self._use() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new uses, wait (up to `timeout`) for those in progress, then close every connection.

        A thread still inside a query after the wait keeps its connection open (and a log line says
        so) rather than have it closed under it."""
        with self._lock:
            self._closed = True
            if not self._idle.wait_for(lambda: self._active == 0, timeout):
                logger.error("[shutdown] store %s still in use by %d thread(s) after %.0f s; "
                             "leaving their connections open", self.path, self._active, timeout)
                return
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
