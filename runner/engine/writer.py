"""Writer: Results -> rows in the output / error JSONL, checkpoints, and each batch's ending.

Runs in its own thread and owns the output files and every database write of the engine. Each
Result is appended at once (200 -> output file, anything else -> error file with the HTTP-style
response, per the contract's section 2.5), unless its input line is already written. Every
settings.checkpoint_interval seconds it fsyncs the files THEN records the Progress
(Source.checkpoint: the store's row, or `runner run`'s checkpoint file), so no checkpoint ever
points past durable bytes.

Endings: when completed + failed == total the batch goes in_progress -> finalizing -> completed
(or cancelling -> cancelled if a cancel raced it). A Close writes every line not yet written as
{response: null, error: {code: batch_cancelled | batch_expired}}, then ends the batch as cancelled /
expired. Every ending checkpoints first, so each custom_id is in exactly one file, exactly once.

A damaged input file (gone, cut, grown or changed since validation: jsonl.InputDamaged) ends its
batch, never the engine (#14). The rows already written stay; the lines not written cannot be
listed faithfully (their custom_ids are gone or no longer trusted), so none is invented: the batch
ends as failed (cancelled / expired if that was asked first) with one `errors` entry, code
file_not_found or file_damaged, that says how many lines have rows and how many never ran. An
output or error file changed by anything but this writer while its batch runs (the ledger's sync
finds it a size the ledger did not write) fails the batch the same way, code file_damaged: rows
after the change are lost or glued onto a torn one, so `completed` would be a lie.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import orjson

from runner.engine.ledger import Ledger
from runner.engine.messages import STOP, Check, Close, EngineState, Result, Results
from runner.engine.niceness import nice_this_thread
from runner.engine.sources import Source
from runner.engine.stats import EngineReporter
from runner.ids import new_line_id, new_request_id
from runner.jsonl import InputDamaged, iter_custom_ids
from runner.settings import Settings
from runner.wire import CANCELLED_MESSAGE, EXPIRED_MESSAGE, error_line, output_line

logger = logging.getLogger(__name__)

MAX_BATCH = 4096  # messages handled between two flushes
_REASONS = {"cancelled": ("batch_cancelled", CANCELLED_MESSAGE), "expired": ("batch_expired", EXPIRED_MESSAGE)}


class Writer(threading.Thread):
    """Appends rows, checkpoints, ends batches; the engine's only writer of files and SQLite."""

    def __init__(self, settings: Settings, source: Source, state: EngineState,
                 inbox: queue.Queue[object], stop: threading.Event) -> None:
        super().__init__(name="engine-writer", daemon=True)
        self.settings = settings
        self.source = source
        self.state = state
        self.inbox = inbox
        self.stop = stop
        self.error: BaseException | None = None
        self._last_log = time.monotonic()
        self._generated_at_log: dict[str, int] = {}
        self.reporter = EngineReporter(state)  # in-flight lines, model loads, vLLM's metrics (GET /metrics)

    def run(self) -> None:
        nice_this_thread(self.settings.helper_nice)
        try:
            self._run()
        except BaseException as exc:
            logger.exception("writer died")
            self.error = exc
            self.stop.set()

    def _run(self) -> None:
        interval = self.settings.checkpoint_interval
        next_checkpoint = time.monotonic() + interval
        stopping = False
        while not stopping:
            try:
                msg: object | None = self.inbox.get(timeout=max(0.0, next_checkpoint - time.monotonic()))
            except queue.Empty:
                msg = None
            handled = 0
            while msg is not None:
                if msg is STOP:
                    stopping = True
                else:
                    self.handle(msg)
                handled += 1
                if handled >= MAX_BATCH:
                    break
                try:
                    msg = self.inbox.get_nowait()
                except queue.Empty:
                    msg = None
            for ledger in self.state.open_ledgers():
                ledger.flush()
            if stopping or time.monotonic() >= next_checkpoint:
                self.checkpoint_all()
                self._log_throughput()
                next_checkpoint = time.monotonic() + interval
            try:
                self.reporter.tick(self.source, force=stopping)
            except Exception:  # figures for /metrics must never stop the writer (and so the engine)
                logger.exception("engine report for /metrics failed")
        for ledger in self.state.open_ledgers():
            ledger.close()
        logger.info("[shutdown] writer stopped after a final checkpoint")

    def handle(self, msg: object) -> None:
        if isinstance(msg, Results):
            ledgers: dict[str, Ledger | None] = {}  # one lookup per batch per message, not per row
            for item in msg.items:
                if item.batch_id not in ledgers:
                    ledgers[item.batch_id] = self.state.ledger(item.batch_id)
                self._result(item, ledgers[item.batch_id])
        elif isinstance(msg, Close):
            self._close(msg)
        elif isinstance(msg, Check):
            self._check(msg.batch_id)

    # -- rows ----------------------------------------------------------------------------------------
    def _result(self, msg: Result, ledger: Ledger | None) -> None:
        if ledger is None or ledger.closed:
            return  # the batch ended (cancel/expiry raced this line): its row is already written
        r = msg.result
        row = output_line(new_line_id(), msg.custom_id, r.status_code, new_request_id(), r.body)
        if ledger.append(msg.line, orjson.dumps(row) + b"\n", ok=r.ok, usage=r.usage):
            stats = self.state.stats[msg.model]
            stats.lines += 1
            stats.output_tokens += r.usage.completion_tokens
        if ledger.finished:
            self._end(ledger, None)

    def _close(self, msg: Close) -> None:
        ledger = self.state.ledger(msg.batch_id)
        if ledger is None:
            if msg.batch_id not in self.state.ended:
                # e.g. cancelled while validating: no files, no rows
                error = None if msg.damage is None else damage_entry(msg.damage, msg.reason, 0, 0)
                self.source.settle(msg.batch_id, msg.reason, error)
                self.state.ended.add(msg.batch_id)
            return
        if msg.reason == "failed" and ledger.finished:
            self._end(ledger, None)  # every line has its row: the damage came too late to matter
            return
        damage = msg.damage or ledger.damage
        written = 0
        if damage is None and msg.reason in _REASONS:
            code, message = _REASONS[msg.reason]
            try:
                for lineno, cid in iter_custom_ids(ledger.input_path, self.settings.max_line_bytes,
                                                   size=ledger.input_bytes):
                    if lineno in ledger.done:
                        continue
                    row = error_line(new_line_id(), cid, code, message)
                    written += ledger.append(lineno, orjson.dumps(row) + b"\n", ok=False)
            except InputDamaged as exc:
                damage = exc  # the rows written so far stay; the rest cannot be listed
        logger.info("batch %s batch=%s unrun_lines=%d%s", msg.reason, msg.batch_id, written,
                    f" damaged_input={damage}" if damage is not None else "")
        self._end(ledger, msg.reason, damage)

    def _check(self, batch_id: str) -> None:
        ledger = self.state.ledger(batch_id)
        if ledger is not None:
            if ledger.finished:
                self._end(ledger, None)
            return
        if self.source.status(batch_id) == "finalizing":
            self._settle(batch_id, None)
            self.state.ended.add(batch_id)

    # -- checkpoints and endings ---------------------------------------------------------------------
    def checkpoint_all(self) -> None:
        for ledger in self.state.open_ledgers():
            if ledger.dirty:
                self.source.checkpoint(ledger)
                if ledger.output_damage is not None:
                    self._end(ledger, "failed")  # its lines still in flight are dropped as for any ended batch

    def _end(self, ledger: Ledger, reason: str | None, damage: InputDamaged | None = None) -> None:
        self.source.checkpoint(ledger)
        t = ledger.totals
        error = None if damage is None else damage_entry(damage, reason, t.completed + t.failed, ledger.total)
        if ledger.output_damage is not None and error is None:
            # A completed status would claim every row is there; cancelled/expired keep their reason.
            reason = reason or "failed"
            error = output_damage_entry(ledger.output_damage, reason, t.completed + t.failed, ledger.total)
        status = self.source.settle(ledger.batch_id, reason, error)
        ledger.close()
        self.state.unregister(ledger.batch_id)
        logger.info("batch done batch=%s status=%s completed=%d failed=%d total=%d", ledger.batch_id, status,
                    t.completed, t.failed, ledger.total)

    def _settle(self, batch_id: str, reason: str | None) -> str:
        return self.source.settle(batch_id, reason)

    def _log_throughput(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_log
        idle = all(s.lines == 0 for s in self.state.stats.values()) and not any(
            w.used for w in list(self.state.windows.values()))
        generated = dict(self.state.generated)
        if idle:
            self._last_log = now  # an interval starts with the work, not with the idle time before it
            self._generated_at_log = generated
            return
        if elapsed < self.settings.throughput_log_interval:
            return
        self._last_log = now
        for model in sorted(set(self.state.stats) | set(list(self.state.windows))):
            stats = self.state.stats[model]
            window = self.state.windows.get(model)
            inflight = window.used if window is not None else 0
            if stats.lines == 0 and inflight == 0:
                continue
            tokens = stats.output_tokens
            if model in generated:  # counts the tokens of lines still in flight too
                before = self._generated_at_log.get(model, 0)
                tokens = generated[model] - before if generated[model] >= before else generated[model]  # reloaded
            logger.info("throughput model=%s lines/s=%.1f tokens/s=%.1f in_flight=%d", model,
                        stats.lines / elapsed, tokens / elapsed, inflight)
            stats.lines = stats.output_tokens = 0
        self._generated_at_log = generated


def output_damage_entry(detail: str, reason: str, written: int, total: int) -> dict[str, Any]:
    """The Batch `errors` entry of a batch whose output or error file was changed while it ran."""
    what = {"cancelled": "was cancelled", "expired": "expired"}.get(reason, "failed")
    message = (f"The batch's {detail}: it was cut or changed while the batch ran, so rows after the change may be "
               f"lost or joined to a torn row. The batch {what} with {written} of {total} lines written; download "
               "what is readable and run the lines missing from both files again.")
    return {"code": "file_damaged", "message": message, "param": "output_file_id", "line": None}


def damage_entry(damage: InputDamaged, reason: str | None, written: int, total: int) -> dict[str, Any]:
    """The Batch `errors` entry of a batch that ended on its damaged input file."""
    what = {"cancelled": "was cancelled", "expired": "expired"}.get(reason or "", "failed")
    unrun = "could not be listed as error rows" if reason in _REASONS else "were not run"
    message = (f"The input file {damage.name} {damage.detail}, so the batch {what} with {written} of {total} "
               f"lines in its output and error files; the other {max(0, total - written)} {unrun}. Upload the "
               "file again and create a new batch for them.")
    return {"code": damage.code, "message": message, "param": "input_file_id", "line": damage.line}
