"""Services: what the API process holds while it runs (stores, models, validation workers)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner.api.enqueue import gate
from runner.model_specs import ModelRegistry
from runner.settings import Settings
from runner.store import BatchStore, Database, FileStore, IdempotencyStore, ModelStates, StatsStore, WebhookStore
from runner.validation import validate_batch_file

logger = logging.getLogger(__name__)


class Services:
    """The API's stores and background work; built in the app lifespan, never a global."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.started_at = time.time()
        self.db = Database(settings.db_path, busy_timeout=settings.db_busy_timeout)  # 503 database_busy after it
        self.files = FileStore(self.db, settings.files_dir)
        self.batches = BatchStore(self.db, self.files)
        self.model_states = ModelStates(self.db)
        self.stats = StatsStore(self.db)  # live throughput and GET /metrics
        self.webhooks = WebhookStore(self.db)
        self.idempotency = IdempotencyStore(self.db, started_at=self.started_at)  # Idempotency-Key (#16)
        self.wake_webhooks: Callable[[], None] = lambda: None  # the lifespan's delivery worker sets it
        self.files.startup_check()  # temp and orphan files removed, damaged files marked (#14)
        self._validators = ThreadPoolExecutor(max_workers=2, thread_name_prefix="validate")
        self._retries: dict[str, threading.Timer] = {}
        self._retry_lock = threading.Lock()
        self._closed = False
        self.stopping = threading.Event()  # set when the app starts shutting down

    def resume_validation(self) -> None:
        """Batches left in `validating` by a crash are validated again."""
        for row in self.batches.validating():
            self.submit_validation(row["id"])

    def submit_validation(self, batch_id: str, attempt: int = 0) -> None:
        with self._retry_lock:
            self._retries.pop(batch_id, None)
            if self._closed:
                return
            self._validators.submit(self._validate, batch_id, attempt)

    def _retry_later(self, batch_id: str, attempt: int) -> None:
        """A storage error (disk full, database busy) is transient: validate again after a backoff, so
        the batch does not sit in `validating` until the next restart (see #6)."""
        delay = min(60.0, 0.5 * 2 ** attempt)
        with self._retry_lock:
            if self._closed:
                return
            timer = threading.Timer(delay, self.submit_validation, (batch_id, attempt + 1))
            timer.daemon = True
            self._retries[batch_id] = timer
            timer.start()

    def _validate(self, batch_id: str, attempt: int = 0) -> None:
        try:
            row = self.batches.get_any(batch_id)
            if row is None or row["status"] != "validating":
                return
            f = self.files.get_any(row["input_file_id"])
            s = self.settings
            if f is None:
                errors = [{"code": "file_not_found", "message": f"Input file {row['input_file_id']} is gone.",
                           "param": "input_file_id", "line": None}]
                self.batches.fail_validation(batch_id, errors, int(time.time()), model=None)
                return
            path = self.files.path_of(f["id"])
            damage = self._input_damage(path, int(f["bytes"]))
            if damage is not None:
                self.batches.fail_validation(batch_id, [damage], int(time.time()), model=None)
                logger.warning("batch input damaged batch=%s: %s", batch_id, damage["message"])
                return
            result = validate_batch_file(
                path,
                endpoint=row["endpoint"],
                models=self.registry,
                max_lines=s.max_batch_lines,
                max_line_bytes=s.max_line_bytes,
                max_errors=s.max_batch_errors,
            )
            now = int(time.time())
            if result.ok and result.model is not None:
                # the key's enqueued caps and the deadline check, in the start's transaction (#16)
                check = gate(s, owner=row["owner"], model=result.model, total=result.total,
                             tokens=result.input_tokens, window=row["completion_window"],
                             expires_at=int(row["expires_at"] or 0))
                started = self.batches.start(batch_id, model=result.model, total=result.total, now=now,
                                             file_expiry_seconds=s.file_expiry_seconds,
                                             enqueued_tokens=result.input_tokens, gate=check)
                logger.info("batch validated batch=%s lines=%d tokens~%d model=%s started=%s", batch_id,
                            result.total, result.input_tokens, result.model, started)
            else:
                self.batches.fail_validation(batch_id, result.errors, now, model=result.model)
                logger.info("batch failed validation batch=%s errors=%d", batch_id, result.error_count)
        except (OSError, sqlite3.Error) as exc:
            logger.warning("validation hit a storage error batch=%s attempt=%d: %s", batch_id, attempt, exc)
            self._retry_later(batch_id, attempt)
        except Exception:
            # Leave it in `validating`: a restart validates it again.
            logger.exception("validation crashed batch=%s", batch_id)

    @staticmethod
    def _input_damage(path: Path, recorded: int) -> dict[str, Any] | None:
        """The `errors` entry of an input file gone from disk, or of another size than uploaded.
        A missing file is not a transient storage error: retrying would keep the batch in
        `validating` forever (#14)."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return {"code": "file_not_found", "param": "input_file_id", "line": None,
                    "message": f"The input file {path.name} is gone from the server's storage; upload it again."}
        if size != recorded:
            return {"code": "file_damaged", "param": "input_file_id", "line": None,
                    "message": f"The input file {path.name} is {size} bytes on disk, {recorded} were uploaded; "
                               "upload it again."}
        return None

    def sweep(self, now: int | None = None) -> int:
        """Delete expired files and Idempotency-Key rows; `now` lets tests move the clock forward."""
        gone = self.files.sweep_expired(int(time.time()) if now is None else now, stop=self.stopping.is_set)
        if gone:
            logger.info("expired files deleted count=%d", len(gone))
        keys = self.idempotency.sweep(time.time() if now is None else now)  # Idempotency-Key rows past 24 h
        if keys:
            logger.info("expired idempotency keys deleted count=%d", keys)
        return len(gone)

    def close(self) -> None:
        """Stop background work and wait for it, then close the store (which waits for its users)."""
        self.stopping.set()
        with self._retry_lock:
            self._closed = True
            for timer in self._retries.values():
                timer.cancel()
            self._retries.clear()
        self._validators.shutdown(wait=True, cancel_futures=False)
        self.db.close()
