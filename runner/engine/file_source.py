"""FileSource: one input JSONL -> its output (and errors) JSONL, as one batch of the engine.

`runner run` runs the server's engine (feeder, loop, writer) over this Source, so it has the same
window, model switching, error rows, fsync-then-checkpoint and exactly-once resume. Where the
server records progress in SQLite, a run records it in a checkpoint file beside the output
(`.OUT.jsonl.runner-checkpoint`): a JSON header (the input's identity, the durable sizes, the
counts and token totals) and the bitmap of written input lines, written after the output was
fsynced and renamed into place, so it never points past durable bytes. A rerun cuts the output
back to the checkpoint and skips the lines the bitmap holds, without reading the output. Memory
is flat in the file size: the bitmap is one bit a line, and nothing holds the set of custom_ids.

Without a usable checkpoint (none yet, another input, an output cut shorter than recorded) the
rerun falls back to reading the custom_ids of the rows kept, the way `vllm run-batch` users
expect a rerun to skip what is there.

Unlike the server, whose validation guarantees one model and one endpoint per batch, a run checks
each line as it goes (route()): a line that cannot run gets its error row and the run goes on;
its lines may name several models, each fed from its own pass over the file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from runner.engine.ledger import Ledger, LineSet, Totals
from runner.engine.sources import BatchInfo, FeedPlan, flock
from runner.errors import ConfigError, LineError, clip, endpoint_mismatch
from runner.jsonl import iter_lines
from runner.model_specs import SUPPORTED_ENDPOINTS, ModelRegistry

logger = logging.getLogger(__name__)

BATCH_ID = "run"
CHECKPOINT_VERSION = 1
MAX_DISTINCT = 4096  # (model, url) pairs the pre-pass keeps; past it, a second pass routes the lines


def checkpoint_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.runner-checkpoint")


@dataclass
class InputScan:
    """The pre-pass: every line is JSON with a string custom_id (else ConfigError, naming the
    line), the line count, and the distinct (model, url) pairs the lines name."""

    total: int = 0
    urls: set[str] = field(default_factory=set)  # the supported endpoints the lines use
    pairs: set[tuple[str | None, str | None]] = field(default_factory=set)
    malformed: bool = False  # some line's method or body is wrong: an error row whatever the model
    overflow: bool = False  # more than MAX_DISTINCT pairs

    @classmethod
    def of(cls, path: Path, max_line_bytes: int) -> InputScan:
        scan = cls()
        for lineno, raw in iter_lines(path, max_line_bytes):
            if raw is None:
                raise ConfigError(f"{path}:{lineno}: line is longer than {max_line_bytes} bytes")
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not JSON ({exc}); is this a batch file?") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
                raise ConfigError(f"{path}:{lineno}: no string 'custom_id'; is this a batch file?")
            scan.total += 1
            url, body = obj.get("url"), obj.get("body")
            if url in SUPPORTED_ENDPOINTS:
                scan.urls.add(url)
            if obj.get("method", "POST") != "POST" or not isinstance(body, dict):
                scan.malformed = True
                continue
            model = body.get("model")
            # A model that is not a string gets a name no model has (ids hold no NUL).
            name = model[:200] if isinstance(model, str) else None if model is None else "\x00"
            pair = (name, url[:200] if isinstance(url, str) else None)
            if len(scan.pairs) < MAX_DISTINCT:
                scan.pairs.add(pair)
            elif pair not in scan.pairs:
                scan.overflow = True
        return scan


class Router:
    """A parsed line -> the model id it runs on, or its error row (the checks the server's
    validation makes at batch creation, made per line)."""

    def __init__(self, registry: ModelRegistry, hint: str = "") -> None:
        self.registry = registry
        self.hint = hint  # added to the unknown-model message (e.g. how to name the model)
        self.served = ", ".join(clip(m, quote=True) for m in registry.ids)
        self.only = registry.specs[0] if len(registry.specs) == 1 else None

    def __call__(self, obj: dict[str, Any]) -> str | LineError:
        if obj.get("method", "POST") != "POST":
            return LineError("'method' must be POST.", param="method", code="invalid_method")
        body = obj.get("body")
        if not isinstance(body, dict):
            return LineError("'body' must be a JSON object.", param="body", code="invalid_body")
        return self.model_for(body.get("model"), obj.get("url"))

    def model_for(self, model: Any, url: Any) -> str | LineError:
        spec = self.only if model is None else self.registry.get(model) if isinstance(model, str) else None
        if spec is None:
            return LineError(f"The model {clip(model, quote=True)} does not exist; this run serves "
                             f"{self.served}{self.hint}.",
                             status=404, param="model", code="model_not_found")
        if not isinstance(url, str) or url not in SUPPORTED_ENDPOINTS:
            return LineError(f"The url {clip(url, quote=True)} is not a batch endpoint (one of "
                             f"{', '.join(SUPPORTED_ENDPOINTS)}).", param="url", code="invalid_url")
        if not spec.serves(url):
            return endpoint_mismatch(spec.id, url, spec.endpoints)
        return spec.id


class RunModels:
    """The ModelReport of a run. There is no one to wait for a model: a failed load, or a model
    stopped after a run of 5xx rows, ends the run (what is written stays; a rerun resumes)."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self.failed = threading.Event()

    def reset(self) -> None:
        pass

    def loaded(self, model: str, now: float) -> None:
        pass

    def unloaded(self, model: str) -> None:
        pass

    def load_failed(self, model: str, notice: dict[str, Any], *, error: str, attempts: int, retry_at: float,
                    now: float, state: str = "load_failed") -> None:
        what = "failed to load" if state == "load_failed" else "was stopped"
        self.failure = f"the model {model!r} {what}: {error}"
        self.failed.set()


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


class FileSource:
    """`runner run`'s Source. Takes the output's lock and opens the ledger at once (so a second
    run on the same output is refused before it touches a byte, and the caller can tell a finished
    run before any model loads)."""

    def __init__(self, input_path: Path, output_path: Path, errors_path: Path | None, registry: ModelRegistry,
                 scan: InputScan, *, hint: str = "", max_line_bytes: int = 16 * 1024 * 1024,
                 on_checkpoint: Callable[[Totals], None] | None = None) -> None:
        self.input_path = input_path
        # The input as scanned, taken once: a checkpoint names the file this run read, and a stat at
        # each checkpoint raised FileNotFoundError in the writer when the input was deleted mid-run
        # (the damage path, which fails the run cleanly, never got to say so).
        self._input_identity = _identity(input_path)
        self.output_path = output_path
        self.errors_path = errors_path
        self.route = Router(registry, hint)
        self.total = scan.total
        self.models = RunModels()
        self.ended = threading.Event()
        self.on_checkpoint = on_checkpoint
        self.status_now = "in_progress"
        self.failure: str | None = None  # why the run failed (its input was damaged under it)
        self._plans = self._plan(scan, max_line_bytes)
        endpoints = sorted(scan.urls)
        self.endpoint = endpoints[0] if endpoints else "/v1/chat/completions"
        self.checkpoint_file = checkpoint_path(output_path)
        self._lock: IO[bytes] | None = flock(output_path, None)
        try:
            self.ledger = self._resume(max_line_bytes)
        except BaseException:
            self._lock.close()
            raise

    def _plan(self, scan: InputScan, max_line_bytes: int) -> list[FeedPlan]:
        """One feed per model the lines run on, and one for the lines that cannot run."""
        routes: set[str] = set()
        errors = scan.malformed
        if scan.overflow:  # too many distinct pairs to keep: route every line once more
            for _, raw in iter_lines(self.input_path, max_line_bytes):
                where = self.route(orjson.loads(raw or b"{}"))
                if isinstance(where, LineError):
                    errors = True
                else:
                    routes.add(where)
        else:
            for model, url in scan.pairs:
                where = self.route.model_for(model, url)
                if isinstance(where, LineError):
                    errors = True
                else:
                    routes.add(where)
        if len(routes) == 1 and not errors:
            return [FeedPlan(routes.pop())]  # the common case: no per-line routing at all
        plans = [FeedPlan(m, self.route) for m in sorted(routes)]
        if errors:
            plans.append(FeedPlan("", self.route))
        return plans

    def _resume(self, max_line_bytes: int) -> Ledger:
        header, bits = self._read_checkpoint()
        totals = Totals()
        durable: tuple[int | None, int | None] = (None, None)
        resume = None
        if header is not None:
            durable = (int(header["output_bytes"]), int(header["error_bytes"]))
            totals = Totals(completed=header["completed"], failed=header["failed"],
                            input_tokens=header["input_tokens"], cached_tokens=header["cached_tokens"],
                            output_tokens=header["output_tokens"], reasoning_tokens=header["reasoning_tokens"])
            resume = LineSet(bits)
        return Ledger(batch_id=BATCH_ID, model="", total=self.total, input_path=self.input_path,
                      output_path=self.output_path, error_path=self.errors_path, durable=durable, totals=totals,
                      max_line_bytes=max_line_bytes, resume=resume)

    def _header(self) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "input": self._input_identity,
                "output": str(self.output_path.resolve()),
                "errors": str(self.errors_path.resolve()) if self.errors_path else None}

    def _read_checkpoint(self) -> tuple[dict[str, Any] | None, bytes]:
        try:
            data = self.checkpoint_file.read_bytes()
        except FileNotFoundError:
            return None, b""
        head, _, bits = data.partition(b"\n")
        try:
            header = orjson.loads(head)
        except orjson.JSONDecodeError:
            header = None
        want = self._header()
        if not isinstance(header, dict) or any(header.get(k) != v for k, v in want.items()):
            logger.warning("checkpoint %s is for another input or output; reading the rows kept instead",
                           self.checkpoint_file)
            return None, b""
        return header, bits

    # -- the Source protocol -------------------------------------------------------------------------
    def acquire(self, stopping: threading.Event) -> IO[bytes] | None:
        lock, self._lock = self._lock, None
        return lock

    def changed_since(self, version: int) -> tuple[bool, int]:
        return False, version  # nobody else changes a run

    def listen(self, on_change: Callable[[], None]) -> bool:
        return True  # nobody else changes a run: nothing to hear, and nothing to check for

    def active(self) -> list[BatchInfo]:
        if self.status_now != "in_progress":
            return []
        model = self._plans[0].model if len(self._plans) == 1 else ""
        return [BatchInfo(id=BATCH_ID, seq=0, status="in_progress", model=model, endpoint=self.endpoint,
                          expires_at=None, has_files=True)]

    def feeds(self, info: BatchInfo) -> list[FeedPlan]:
        return self._plans

    def open_ledger(self, batch_id: str, max_line_bytes: int) -> Ledger | None:
        return self.ledger

    def checkpoint(self, ledger: Ledger) -> None:
        """fsync the output, then write the checkpoint (header + bitmap) and rename it into place."""
        p = ledger.sync()
        header = self._header() | {
            "total": self.total, "output_bytes": p.output_bytes, "error_bytes": p.error_bytes,
            "completed": p.completed, "failed": p.failed, "input_tokens": p.input_tokens,
            "cached_tokens": p.cached_tokens, "output_tokens": p.output_tokens,
            "reasoning_tokens": p.reasoning_tokens}
        tmp = self.checkpoint_file.with_name(self.checkpoint_file.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(header) + b"\n" + ledger.done.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint_file)
        dir_fd = os.open(self.checkpoint_file.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        if self.on_checkpoint is not None:
            self.on_checkpoint(ledger.totals)

    def settle(self, batch_id: str, reason: str | None, error: dict[str, Any] | None = None) -> str:
        self.status_now = "completed" if reason is None else reason
        if error is not None:
            self.failure = str(error["message"])
        self.ended.set()
        return self.status_now

    def report(self, key: str, value: str) -> None:
        pass  # `runner run` serves no /metrics: nothing reads these

    def record_loads(self, loads: list[tuple[str, bool, float, float]]) -> None:
        pass

    def status(self, batch_id: str) -> str | None:
        return self.status_now

    def close(self) -> None:
        self.ledger.close()  # a no-op if the writer closed it
        if self._lock is not None:
            self._lock.close()
            self._lock = None
