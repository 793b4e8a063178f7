"""FileStore: file rows in SQLite and their bytes under data/files, written atomically."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from runner.errors import Conflict, InvalidRequest, NotFound
from runner.store.db import Database
from runner.store.transitions import RUNNING


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Uploaded, output and error files of every owner."""

    def __init__(self, db: Database, files_dir: str | Path) -> None:
        self.db = db
        self.dir = Path(files_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.dir / ".tmp"
        self.tmp_dir.mkdir(exist_ok=True)

    # -- paths -------------------------------------------------------------------------------------
    def path_of(self, file_id: str) -> Path:
        return self.dir / file_id

    def new_temp(self) -> tuple[Path, IO[bytes]]:
        """An anonymous temp file in the same filesystem, so the final rename is atomic."""
        fd_path = self.tmp_dir / f"upload-{os.getpid()}-{time.monotonic_ns()}"
        return fd_path, open(fd_path, "xb")

    def clean_temp(self) -> int:
        """Remove temp files left by a crash mid-upload; they were never visible."""
        n = 0
        for p in self.tmp_dir.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        return n

    # -- writes ------------------------------------------------------------------------------------
    def commit_upload(
        self,
        tmp_path: Path,
        *,
        file_id: str,
        owner: str,
        purpose: str,
        filename: str,
        size: int,
        created_at: int,
        expires_at: int | None,
    ) -> sqlite3.Row:
        """Rename an fsynced temp file into place, then insert its row; a crash between the two
        leaves an orphan file with no row, never a row with no file."""
        final = self.path_of(file_id)
        os.replace(tmp_path, final)
        try:
            fsync_dir(self.dir)
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, expires_at, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'processed')",
                    (file_id, owner, purpose, filename, size, created_at, expires_at),
                )
        except BaseException:
            final.unlink(missing_ok=True)  # e.g. disk full on insert: no orphan bytes left (see #6)
            raise
        return self.get(owner, file_id)

    # -- reads -------------------------------------------------------------------------------------
    def get(self, owner: str, file_id: str) -> sqlite3.Row:
        row = self.db.query_one(
            "SELECT * FROM files WHERE id = ? AND owner = ? AND deleted_at IS NULL", (file_id, owner)
        )
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="id")
        return row

    def get_any(self, file_id: str) -> sqlite3.Row | None:
        return self.db.query_one("SELECT * FROM files WHERE id = ? AND deleted_at IS NULL", (file_id,))

    def list(
        self, owner: str, *, purpose: str | None, order: str, after: str | None, limit: int
    ) -> tuple[list[sqlite3.Row], bool]:
        clauses = ["owner = ?", "deleted_at IS NULL"]
        params: list[Any] = [owner]
        if purpose:
            clauses.append("purpose = ?")
            params.append(purpose)
        if after:
            cursor = self.db.query_one("SELECT seq FROM files WHERE id = ? AND owner = ?", (after, owner))
            if cursor is None:
                raise InvalidRequest(f"No such File object for 'after': {after}", param="after", code="invalid_value")
            clauses.append("seq < ?" if order == "desc" else "seq > ?")
            params.append(cursor["seq"])
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.db.query(
            f"SELECT * FROM files WHERE {' AND '.join(clauses)} ORDER BY seq {direction} LIMIT ?",
            (*params, limit + 1),
        )
        return rows[:limit], len(rows) > limit

    def iter_content(self, row: sqlite3.Row, chunk: int = 256 * 1024) -> Iterator[bytes]:
        """The file's bytes up to its recorded size: for a running batch's output that is the last
        checkpoint, so a reader never sees a torn line."""
        remaining = int(row["bytes"])
        with open(self.path_of(row["id"]), "rb") as f:
            while remaining > 0:
                data = f.read(min(chunk, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data

    # -- delete and retention ----------------------------------------------------------------------
    def delete(self, owner: str, file_id: str, now: int) -> None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM files WHERE id = ? AND owner = ? AND deleted_at IS NULL", (file_id, owner)
            ).fetchone()
            if row is None:
                raise NotFound(f"No such File object: {file_id}", param="id")
            busy = conn.execute(
                f"SELECT id, status FROM batches WHERE status IN ({','.join('?' * len(RUNNING))})"
                " AND (input_file_id = ? OR output_file_id = ? OR error_file_id = ?) LIMIT 1",
                (*sorted(RUNNING), file_id, file_id, file_id),
            ).fetchone()
            if busy is not None:
                raise Conflict(
                    f"File {file_id} is in use by batch {busy['id']} ({busy['status']}); "
                    "cancel the batch or wait for it to finish.",
                    param="file_id",
                    code="file_in_use",
                )
            conn.execute("UPDATE files SET deleted_at = ? WHERE id = ?", (now, file_id))
        self.path_of(file_id).unlink(missing_ok=True)

    def sweep_expired(self, now: int, stop: Callable[[], bool] = lambda: False) -> list[str]:
        """Delete files whose expires_at has passed, except those a running batch still uses.

        `stop` is asked between files, so a shutdown never waits for a long sweep to end."""
        rows = self.db.query(
            "SELECT id FROM files WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?",
            (now,),
        )
        gone: list[str] = []
        for row in rows:
            if stop():
                break
            with self.db.transaction() as conn:
                busy = conn.execute(
                    f"SELECT 1 FROM batches WHERE status IN ({','.join('?' * len(RUNNING))})"
                    " AND (input_file_id = ? OR output_file_id = ? OR error_file_id = ?) LIMIT 1",
                    (*sorted(RUNNING), row["id"], row["id"], row["id"]),
                ).fetchone()
                if busy is not None:
                    continue
                conn.execute("UPDATE files SET deleted_at = ? WHERE id = ?", (now, row["id"]))
            self.path_of(row["id"]).unlink(missing_ok=True)
            gone.append(row["id"])
        return gone
