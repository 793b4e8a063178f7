"""FileStore: file rows in SQLite and their bytes under data/files, written atomically.

The row's `bytes` is the truth a download is served by (for a running batch's output: its last
checkpoint). A file whose size on disk can no longer hold those bytes (cut short, missing; an
upload grown or shrunk) is damaged (#14): the row is marked `status = 'error'` and a download
answers `file_damaged` instead of a Content-Length the body cannot reach. The API checks every
file at startup (startup_check, which also removes orphan files no row names) and again with one
stat() before each download (check_servable).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from runner.errors import ApiError, Conflict, InvalidRequest, NotFound
from runner.store.db import Database
from runner.store.transitions import RUNNING

logger = logging.getLogger(__name__)

MAX_DAMAGE_LINES = 20  # damaged files logged one by one at startup; the rest are counted


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

    # -- startup: orphans and damage ---------------------------------------------------------------
    def startup_check(self) -> None:
        """Before the API serves (and before it starts the engine): remove temp and orphan files,
        then compare each file's size on disk with its row. Only the API calls this: an upload is
        renamed into place before its row commits, so a sweep while requests run would take it."""
        t0 = time.monotonic()
        temps = self.clean_temp()
        orphans = self.sweep_orphans()
        checked, damaged = self.check_sizes()
        if temps:
            logger.warning("temp files removed count=%d (uploads cut by a crash; never acknowledged)", temps)
        if orphans:
            logger.warning("orphan files removed count=%d (files no row names: an upload or delete cut by a "
                           "crash)", orphans)
        if damaged:
            logger.warning("damaged files count=%d: marked status=error, downloads answer file_damaged", damaged)
        logger.info("startup file check files=%d damaged=%d orphans=%d temps=%d seconds=%.3f", checked, damaged,
                    orphans, temps, time.monotonic() - t0)

    def sweep_orphans(self) -> int:
        """Remove the files named like file ids that no live row names. The directory is listed
        before the rows are read, so a row committed meanwhile keeps its file."""
        names = [e.name for e in os.scandir(self.dir)
                 if e.name.startswith("file-") and e.is_file(follow_symlinks=False)]
        if not names:
            return 0
        live = {r[0] for r in self.db.query("SELECT id FROM files WHERE deleted_at IS NULL")}
        n = 0
        for name in names:
            if name not in live:
                (self.dir / name).unlink(missing_ok=True)
                n += 1
        return n

    def check_sizes(self) -> tuple[int, int]:
        """Mark each file damaged or sound by its size on disk; (files checked, damaged). The files
        of a running batch are the engine's: its recovery cuts a short output back to whole rows
        and runs the lost lines again (ledger.py), so they are not judged here."""
        rows = self.db.query(
            "SELECT f.id, f.bytes, f.batch_id, f.status, b.status AS batch_status FROM files f"
            " LEFT JOIN batches b ON b.id = f.batch_id WHERE f.deleted_at IS NULL"
        )
        checked = damaged = 0
        for row in rows:
            if row["batch_status"] in RUNNING:
                continue
            checked += 1
            why = self.damage(row)
            self._mark(row, why)
            if why is not None:
                damaged += 1
                if damaged <= MAX_DAMAGE_LINES:
                    logger.warning("file damaged id=%s: %s", row["id"], why)
        return checked, damaged

    def damage(self, row: sqlite3.Row) -> str | None:
        """Why the file on disk cannot hold the bytes its row records; None when it can. A batch's
        output may be longer than recorded (rows written after the last checkpoint: only the
        recorded prefix is served); an upload never changes size."""
        recorded = int(row["bytes"])
        try:
            size = self.path_of(row["id"]).stat().st_size
        except FileNotFoundError:
            return f"the file is missing from the server's storage ({recorded} bytes recorded)"
        if size < recorded:
            return f"the file is {size} bytes on disk, {recorded} bytes recorded: it was cut short"
        if size > recorded and row["batch_id"] is None:
            return f"the file is {size} bytes on disk, {recorded} bytes recorded: it was changed"
        return None

    def _mark(self, row: sqlite3.Row, why: str | None) -> None:
        """status 'error' while damaged; back to 'processed' once sound again (e.g. restored)."""
        status = "processed" if why is None else "error"
        if row["status"] != status:
            with self.db.transaction() as conn:
                conn.execute("UPDATE files SET status = ? WHERE id = ?", (status, row["id"]))

    def check_servable(self, row: sqlite3.Row) -> None:
        """One stat() before a download: a damaged file is marked and answered `file_damaged`
        (500: the server's storage failed, not the client), never served with a Content-Length its
        body cannot reach."""
        why = self.damage(row)
        self._mark(row, why)
        if why is not None:
            logger.error("file damaged id=%s: %s", row["id"], why)
            raise ApiError(f"The file {row['id']} is damaged on the server: {why}. Upload it again, or run its "
                           "batch again.", param="file_id", code="file_damaged")

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

    def iter_content(self, row: sqlite3.Row, start: int = 0, length: int | None = None,
                     chunk: int = 256 * 1024) -> Iterator[bytes]:
        """`length` bytes from `start` (default: up to the recorded size: for a running batch's
        output that is the last checkpoint, so a reader never sees a torn line). A file cut short
        while it is read ends early: the row is marked damaged and the server closes the connection
        (the headers, Content-Length included, are gone already)."""
        remaining = int(row["bytes"]) - start if length is None else length
        with open(self.path_of(row["id"]), "rb") as f:
            if start:
                f.seek(start)
            while remaining > 0:
                data = f.read(min(chunk, remaining))
                if not data:
                    logger.error("file damaged id=%s: it ended %d bytes early while being downloaded",
                                 row["id"], remaining)
                    self._mark(row, "cut short while downloaded")
                    return
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
