"""The engine's one seam to the outside: where batches' lines come from and where their rows go.

The feeder, loop and writer are the same for `runner serve` and `runner run`; only the Source
differs:
- StoreSource: the batches of the server's SQLite store and its files (the API creates and
  cancels them, /health reads the model states);
- FileSource (file_source.py): one input JSONL and its output (and errors) JSONL, for `runner run`.

A Source is read by the feeder (active batches, how their lines split over models, the ledger that
resumes them, model states) and written by the writer (checkpoints and endings). It is one object,
not a line source plus a row sink, because a resume needs both halves at once: the durable sizes
a ledger cuts its files back to are whatever the last checkpoint recorded.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from runner.engine.handles import HandlePool
from runner.engine.ledger import Ledger, Totals
from runner.errors import ConfigError, Conflict, LineError
from runner.settings import Settings
from runner.store import BatchStore, Database, FileStore, ModelStates, StatsStore
from runner.store.doorbell import API_BELL_FILE, Doorbell

logger = logging.getLogger(__name__)

# A parsed input line -> the id of the model it runs on, or the error row it gets instead.
Route = Callable[[dict[str, Any]], "str | LineError"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the feeder needs to know about one active batch."""

    id: str
    seq: int  # age order: the oldest waiting batch's model is loaded first
    status: str  # in_progress | cancelling | finalizing
    model: str
    endpoint: str
    expires_at: float | None
    has_files: bool  # its output and error files exist (not so for a batch cancelled while validating)
    owner: str = "local"  # its API key's owner: the engine is shared fairly between owners (shares.py)


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """One feed of a batch: the lines that run on `model`, or (model "") the lines none can run."""

    model: str
    route: Route | None = None  # None: every line of the batch belongs to this feed


class ModelReport(Protocol):
    """Where the feeder reports each model's state (ModelStates for the server)."""

    def reset(self) -> None: ...
    def loaded(self, model: str, now: float) -> None: ...
    def unloaded(self, model: str) -> None: ...
    def load_failed(self, model: str, notice: dict[str, Any], *, error: str, attempts: int, retry_at: float,
                    now: float, state: str = "load_failed") -> None: ...


class Source(Protocol):
    models: ModelReport

    def acquire(self, stopping: threading.Event) -> IO[bytes] | None:
        """The lock that makes this the one engine writing these batches (closed when the engine
        ends); None if `stopping` was set while waiting for it."""
        ...

    def changed_since(self, version: int) -> tuple[bool, int]: ...
    def listen(self, on_change: Callable[[], None]) -> bool:
        """Call `on_change` when another process commits what the engine must act on at once (a
        batch started, a cancel); True if it can, so the feeder need not check changed_since often."""
        ...

    def active(self) -> list[BatchInfo]: ...
    def feeds(self, info: BatchInfo) -> list[FeedPlan]: ...
    def open_ledger(self, batch_id: str, max_line_bytes: int) -> Ledger | None: ...
    def checkpoint(self, ledger: Ledger) -> None: ...
    def settle(self, batch_id: str, reason: str | None, error: dict[str, Any] | None = None) -> str:
        """End the batch: completed (reason None), cancelled, expired, or failed (a damaged input).
        `error`: the Batch `errors` entry that says why its lines stopped short (damaged input)."""
        ...

    def status(self, batch_id: str) -> str | None: ...
    def report(self, key: str, value: str) -> None:
        """What only the engine knows, for GET /metrics (engine/stats.py): `key` in_flight or vllm."""
        ...

    def record_loads(self, loads: list[tuple[str, bool, float, float]]) -> None:
        """Finished model loads: (model, ok, seconds, unix time)."""
        ...

    def close(self) -> None: ...


def flock(path: Path, stopping: threading.Event | None) -> IO[bytes] | None:
    """An exclusive flock on `path`, which the OS drops when its holder dies, even by SIGKILL.
    Waits for it while `stopping` is unset; with no `stopping`, raises ConfigError at once."""
    f = open(path, "ab")  # noqa: SIM115 - held while the engine runs
    waited = False
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if stopping is None:
                f.close()
                raise ConfigError(f"another runner is writing {path}") from None
            if not waited:
                logger.warning("another engine holds %s; waiting", path)
                waited = True
            if stopping.wait(0.2):
                f.close()
                return None


class StoreSource:
    """The server's batches: BatchStore rows, FileStore files, ModelStates for /health."""

    def __init__(self, settings: Settings) -> None:
        self.db = Database(settings.db_path)
        self.files = FileStore(self.db, settings.files_dir)
        self.store = BatchStore(self.db, self.files)
        self.models = ModelStates(self.db)
        self.stats = StatsStore(self.db)
        self.lock_path = settings.data_path / "engine.lock"
        self.handles = HandlePool()  # every running batch's output and error files share it
        self.api_bell = Doorbell(settings.data_path / API_BELL_FILE)

    def acquire(self, stopping: threading.Event) -> IO[bytes] | None:
        return flock(self.lock_path, stopping)  # a restarting server waits for the old engine to go

    def changed_since(self, version: int) -> tuple[bool, int]:
        return self.store.changed_since(version)

    def listen(self, on_change: Callable[[], None]) -> bool:
        return self.store.bell.listen(on_change)  # the API rings it (store/doorbell.py)

    def active(self) -> list[BatchInfo]:
        return [BatchInfo(id=r["id"], seq=int(r["seq"]), status=r["status"], model=r["model"] or "",
                          endpoint=r["endpoint"], expires_at=r["expires_at"],
                          has_files=r["output_file_id"] is not None, owner=r["owner"])
                for r in self.store.active()]

    def feeds(self, info: BatchInfo) -> list[FeedPlan]:
        return [FeedPlan(info.model)]  # validation made every line name the batch's one model

    def open_ledger(self, batch_id: str, max_line_bytes: int) -> Ledger | None:
        row = self.store.get_any(batch_id)
        if row is None or row["output_file_id"] is None:
            return None
        files = self.files
        totals = Totals(input_tokens=row["input_tokens"], cached_tokens=row["cached_tokens"],
                        output_tokens=row["output_tokens"], reasoning_tokens=row["reasoning_tokens"])
        input_row = files.get_any(row["input_file_id"])
        return Ledger(batch_id=batch_id, model=row["model"] or "", total=int(row["total"]),
                      input_path=files.path_of(row["input_file_id"]),
                      output_path=files.path_of(row["output_file_id"]),
                      error_path=files.path_of(row["error_file_id"]),
                      durable=self.store.durable_sizes(batch_id), totals=totals, max_line_bytes=max_line_bytes,
                      input_bytes=int(input_row["bytes"]) if input_row is not None else None,
                      handles=self.handles)

    def checkpoint(self, ledger: Ledger) -> None:
        self.store.checkpoint(ledger.batch_id, ledger.sync())  # fsync first, then record

    def settle(self, batch_id: str, reason: str | None, error: dict[str, Any] | None = None) -> str:
        """Move the batch to its terminal status from wherever it is now; retried if a cancel races.
        A damaged input (`error`) fails an in_progress batch; a cancel that came first still wins."""
        status = "?"
        errors = None if error is None else [error]
        for _ in range(5):
            row = self.store.get_any(batch_id)
            if row is None:
                return "gone"
            status = row["status"]
            now = int(time.time())
            try:
                if status == "in_progress" and reason in ("expired", "failed"):
                    self.store.transition(batch_id, reason, now, errors=errors)
                elif status == "in_progress":
                    self.store.transition(batch_id, "finalizing", now)
                    self.store.transition(batch_id, "completed", now)
                elif status == "finalizing":
                    self.store.transition(batch_id, "completed", now)
                elif status == "cancelling":
                    self.store.transition(batch_id, "cancelled", now, errors=errors)
                else:
                    return status
                # ended: the API sends the ending's webhook event now, not at its next timed look
                # at the outbox (store/doorbell.py); the loop reads the status it ended in
                self.api_bell.ring()
            except Conflict:
                continue  # the status moved under us (a cancel): read it again
        row = self.store.get_any(batch_id)
        return row["status"] if row is not None else status

    def status(self, batch_id: str) -> str | None:
        row = self.store.get_any(batch_id)
        return row["status"] if row is not None else None

    def report(self, key: str, value: str) -> None:
        self.stats.report(key, value, time.time())

    def record_loads(self, loads: list[tuple[str, bool, float, float]]) -> None:
        self.stats.model_loads(loads)

    def close(self) -> None:
        self.store.bell.close()
        self.db.close()
