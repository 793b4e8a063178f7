"""Feeder: in_progress batches' pending input lines -> Feed messages for the loop.

Runs in its own thread and owns the reads: it polls the Source's active batches (sources.py: the
server's store, or the one file of `runner run`), opens a batch's Ledger (the restart protocol: cut
files back to the checkpoint, rebuild the set of written lines), and reads input lines lazily
through runner/jsonl.py, skipping lines already written; a feed of a generate model hands them out
in admission order (lookahead.py: a bounded look-ahead per model, shared prefixes together, long
answers first). A batch whose lines name several models
(only `runner run` allows that) gets one feed per model, each reading the lines routed to it. It also turns the batch
statuses into work: cancelling -> Abort("cancelled"), expires_at passed -> Abort("expired"),
finalizing (left by a crash) -> Check.

Fairness (shares.py). Each pass's free window room of a model is shared by virtual time across the
OWNERS (API keys) with runnable batches of it, then across each owner's batches: two owners get
half the engine each whether one has a 50,000-line batch or ten batches and the other 100 lines.
A batch weighs more as its deadline (expires_at) nears: clamp(24h window / time left, 1,
RUNNER_DEADLINE_MAX_WEIGHT), so a "1h" batch goes ahead of "24h" ones, which still get lines: no
weight is under 1, nothing starves. poll keeps each feed's owner and deadline current.

Model switching. One model per task is loaded at a time (one generation model, plus one embedding
model beside it). A task's slot switches only when its model has no unread lines left (or after
SWITCH_QUANTUM seconds while other models' batches wait): the feeder stops feeding it, waits for its
window to drain, then asks the loop to load the model of the oldest waiting batch (lowest seq).
Never per request: a switch is paid once per run of batches. A model that models.yaml no longer
lists turns its batches' lines into 404 error rows. A model that fails to load does not: its
batches stay in_progress with a `model_load_failed` entry in their `errors` (and the model's state
in /health), and the load is tried again after a backoff (2, 4, 8 ... s, at most
RUNNER_MODEL_LOAD_RETRY_MAX_DELAY), so a fixed model file or a freed GPU lets them run on. Their
completion window still bounds the wait: an expired batch ends like any other (see #11).

Open files and damage (#14). Input is read through jsonl.iter_lines_reopening, which holds no
descriptor between chunks, so a thousand running batches cost no more descriptors than one (the
writer's HandlePool bounds the output side). A batch whose input is gone, cut, grown or changed
(InputDamaged: found when its ledger opens or when the feeder reads on) stops being fed and is
ended as failed through the loop (Abort, so its in-flight lines are dropped first); it never
raises out of this thread, so the other batches run on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runner.engine.backend import LineRequest, LineResult
from runner.engine.ledger import Ledger, LineSet
from runner.engine.lookahead import Lookahead, Pool, describe
from runner.engine.lookahead import pool as lookahead_pool
from runner.engine.messages import Abort, Check, Close, EngineState, Feed, Load, Result, Results
from runner.engine.niceness import nice_this_thread
from runner.engine.shares import Shares
from runner.engine.sources import BatchInfo, FeedPlan, Route, Source
from runner.errors import LineError
from runner.jsonl import InputDamaged, changed_line, iter_lines_reopening
from runner.model_specs import ModelRegistry, ModelSpec
from runner.settings import Settings

logger = logging.getLogger(__name__)

SWITCH_QUANTUM = 600.0  # seconds a model keeps its slot while other models' batches wait
DIRECT_PER_PASS = 512  # error rows written per pass for a batch no backend can run
CHANGE_CHECK = 0.01  # seconds between checks for a commit by another process, where no doorbell rings
PASS_LINES = 4096  # most lines one model gets per feeding pass


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that cannot run (its body is not an object, or no backend can take it)."""

    line: int
    custom_id: str
    error: LineError


@dataclass
class BatchFeed:
    """Reading position in one in_progress batch (in its lines for one model, if it has several)."""

    batch_id: str
    seq: int
    model: str
    spec: ModelSpec | None
    endpoint: str
    lines: Iterator[tuple[int, bytes | None]]
    done: LineSet  # lines written before this feed opened (a restart); the writer owns the live set
    path: Path  # the input file
    route: Route | None = None  # None: every line is this feed's
    exhausted: bool = False
    owner: str = "local"  # whose share of the engine its lines use (shares.py); poll keeps it current
    expires_at: float | None = None  # its deadline, which weighs its share up as it nears
    lookahead: Pool | None = None  # the model's look-ahead (lookahead.py); None: file order
    _next: Callable[[], LineRequest | BadLine | None] | None = field(default=None, repr=False)

    def next_request(self) -> LineRequest | BadLine | None:
        """The next unwritten line, in admission order (lookahead.py; file order without a pool); a
        BadLine for one that cannot run; None at the end. Raises InputDamaged when the input is no
        longer the file validation (or the run's scan) read."""
        get = self._next
        if get is None:
            get = self._next = self._reader()
        item = get()
        if item is None:
            self.exhausted = True
        return item

    def _reader(self) -> Callable[[], LineRequest | BadLine | None]:
        # closures over values, not self: a look-ahead holding them must not keep its feed alive
        reads = _reads(self.lines, self.done, self.path, self.route, self.model)
        batch_id, endpoint, spec = self.batch_id, self.endpoint, self.spec

        def request(line: tuple[int, bytes, dict[str, Any]]) -> LineRequest:
            lineno, _, obj = line
            return LineRequest(key=f"{batch_id}:{lineno}", batch_id=batch_id, custom_id=obj["custom_id"],
                               endpoint=obj.get("url") or endpoint, body=obj["body"], line=lineno)

        if self.lookahead is None or spec is None:
            def in_file_order() -> LineRequest | BadLine | None:
                line = next(reads, None)
                return line if line is None or isinstance(line, BadLine) else request(line)
            return in_file_order

        def hold(line: tuple[int, bytes, dict[str, Any]] | BadLine) -> tuple[str, int, int, Any] | None:
            if isinstance(line, BadLine):
                return None  # written at once
            lineno, raw, obj = line
            key, budget = describe(spec, obj.get("url") or endpoint, obj["body"])
            return key, budget, len(raw) + len(key), (lineno, raw)  # held as bytes: no dicts for the GC

        def unpack(held: tuple[int, bytes]) -> LineRequest:
            lineno, raw = held
            obj = orjson.loads(raw)  # the same bytes, checked when read
            return LineRequest(key=f"{batch_id}:{lineno}", batch_id=batch_id, custom_id=obj["custom_id"],
                               endpoint=obj.get("url") or endpoint, body=obj["body"], line=lineno)

        return Lookahead(reads, self.lookahead, hold, unpack).next


def _reads(lines: Iterator[tuple[int, bytes | None]], done: LineSet, path: Path, route: Route | None,
           model: str) -> Iterator[tuple[int, bytes, dict[str, Any]] | BadLine]:
    """A feed's unwritten lines in file order: (line number, raw, parsed) for each that can run,
    a BadLine for each that cannot."""
    for lineno, raw in lines:
        if lineno in done:
            continue
        # Validation (or `runner run`'s scan) saw every line as JSON with a string custom_id,
        # so a line that is not means the file changed under the batch: skipping it would
        # leave the batch short of its total, in_progress until it expired (#14).
        try:
            obj = orjson.loads(raw)  # type: ignore[arg-type] # None (oversized) is a TypeError
            cid = obj["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise changed_line(path, lineno) from None
        if not isinstance(cid, str):
            raise changed_line(path, lineno)
        if route is not None:
            where = route(obj)
            if isinstance(where, LineError):
                if model:
                    continue  # the feed of the lines that cannot run writes its row
                yield BadLine(lineno, cid, where)
                continue
            if where != model:
                continue  # another model's feed runs it
        if not isinstance(obj.get("body"), dict):
            yield BadLine(lineno, cid, LineError("'body' must be a JSON object.", param="body"))
            continue
        yield lineno, raw, obj  # type: ignore[misc] # raw: parsed, so not None


class Feeder(threading.Thread):
    """Polls the store, opens batches, feeds lines in fair shares, decides model loads."""

    def __init__(self, settings: Settings, registry: ModelRegistry, source: Source, state: EngineState,
                 inbox: queue.Queue[object], outbox: queue.Queue[object], stop: threading.Event) -> None:
        super().__init__(name="engine-feeder", daemon=True)
        self.settings = settings
        self.registry = registry
        self.source = source
        self.state = state
        self.inbox = inbox
        self.outbox = outbox
        self.stop = stop
        self.feeds: dict[str, BatchFeed] = {}  # feed key (the batch id, or batch id + model) -> feed
        self.closing: set[str] = set()
        self.slots: dict[str, str] = {}  # task -> model asked of the loop
        self.draining: dict[str, str] = {}  # task -> model no longer fed, waiting for its window
        self.loaded_at: dict[str, float] = {}
        self.rung = False  # the doorbell rang since the last look at the database
        self.passes = 0  # turns of run()'s loop: an idle feeder must not spin (tests/engine/test_wakes.py)
        self.error: BaseException | None = None
        self.models = source.models
        self.asked: dict[str, float] = {}  # model -> when its last Load was sent (monotonic)
        self.reported: dict[str, tuple[str, int]] = {}  # model -> what ModelStates last got
        self.rewound: dict[str, float] = {}  # model -> the stop (LoadFailure.at) its batches were re-read for
        self.pools: dict[str, Pool] = {}  # model -> its feeds' shared look-ahead (lookahead.py)
        self.shares: dict[str, Shares] = {}  # model -> its owners' and batches' virtual times

    def run(self) -> None:
        nice_this_thread(self.settings.helper_nice)
        try:
            self.models.reset()
            # With a doorbell (store/doorbell.py) the API says when a batch starts or is cancelled, so
            # the database is looked at only when it rings and at each timed poll; without one, every
            # CHANGE_CHECK as before. Either way the thread sleeps on state.wake between passes, and
            # an idle engine costs nothing but the timed poll.
            hears = self.source.listen(self._rung)
            check_every = self.settings.poll_interval if hears else CHANGE_CHECK
            wake = self.state.wake
            next_poll = next_check = 0.0
            version = -1
            while not self.stop.is_set():
                self.passes += 1
                wake.clear()  # before the pass: whatever happens during it wakes the next wait
                now = time.monotonic()
                changed = False
                if self.rung or now >= next_check:
                    self.rung = False
                    changed, version = self.source.changed_since(version)
                    next_check = now + check_every
                if changed or now >= next_poll:
                    self.poll()
                    next_poll = time.monotonic() + self.settings.poll_interval
                self.choose_models()
                self.report_models()
                if not self.feed_pass():
                    wake.wait(max(0.0, min(next_poll, next_check) - time.monotonic()))
        except BaseException as exc:
            logger.exception("feeder died")
            self.error = exc
            self.stop.set()

    def _rung(self) -> None:
        self.rung = True
        self.state.wake.set()

    # -- statuses ------------------------------------------------------------------------------------
    def poll(self) -> None:
        infos = self.source.active()
        active = {info.id for info in infos}
        self.closing &= active
        now = time.time()
        for info in infos:
            bid = info.id
            if bid in self.state.ended or bid in self.closing:
                continue
            if info.status == "finalizing":
                self.closing.add(bid)
                self.outbox.put(Check(bid))
                continue
            reason = None
            if info.status == "cancelling":
                reason = "cancelled"
            elif info.expires_at is not None and info.expires_at <= now:
                reason = "expired"
            if reason is not None:
                self.closing.add(bid)
                if self._drop(bid):
                    self.inbox.put(Abort(bid, reason))  # the loop forwards the Close
                else:
                    if info.has_files:
                        self._open_ledger(bid)
                    self.outbox.put(Close(bid, reason))
                continue
            self._open(info)
        for key in [k for k, f in self.feeds.items() if f.batch_id in self.state.ended]:
            del self.feeds[key]
        by_id = {info.id: info for info in infos}
        for feed in self.feeds.values():  # new feeds included: the shares read these
            info = by_id.get(feed.batch_id)
            if info is not None:
                feed.owner, feed.expires_at = info.owner, info.expires_at

    def _drop(self, batch_id: str) -> bool:
        """Stop reading the batch; True if any of its feeds was open."""
        keys = [k for k, f in self.feeds.items() if f.batch_id == batch_id]
        for key in keys:
            self.feeds.pop(key).exhausted = True  # a feeding pass holding it skips it from now on
        return bool(keys)

    def _damaged(self, batch_id: str, damage: InputDamaged) -> None:
        """End the batch on its damaged input: through the loop if lines may be in flight."""
        if batch_id in self.closing:
            return
        logger.error("damaged input, batch ends batch=%s: %s", batch_id, damage)
        self.closing.add(batch_id)
        if self._drop(batch_id):
            self.inbox.put(Abort(batch_id, "failed", damage))  # the loop forwards the Close
        else:
            self.outbox.put(Close(batch_id, "failed", damage))

    def _open_ledger(self, batch_id: str) -> Ledger | None:
        ledger = self.state.ledger(batch_id)
        if ledger is not None:
            return ledger
        ledger = self.source.open_ledger(batch_id, self.settings.max_line_bytes)
        if ledger is None:
            return None
        self.state.register(ledger)
        if ledger.done:
            logger.info("batch resumed batch=%s written=%d total=%d", batch_id, len(ledger.done), ledger.total)
        return ledger

    @staticmethod
    def _key(batch_id: str, plan: FeedPlan) -> str:
        return batch_id if plan.route is None else f"{batch_id}\x00{plan.model}"

    def _open(self, info: BatchInfo) -> None:
        """Open the batch's feeds not open yet (all of them, or those a stopped model dropped)."""
        plans = [p for p in self.source.feeds(info) if self._key(info.id, p) not in self.feeds]
        if not plans:
            return
        ledger = self._open_ledger(info.id)
        if ledger is None:
            return
        if ledger.damage is not None:
            self._damaged(info.id, ledger.damage)
            return
        for plan in plans:
            spec = self.registry.get(plan.model) if plan.model else None
            self.feeds[self._key(info.id, plan)] = BatchFeed(
                batch_id=info.id, seq=info.seq, model=plan.model, spec=spec, endpoint=info.endpoint,
                lines=iter_lines_reopening(ledger.input_path, self.settings.max_line_bytes, size=ledger.input_bytes),
                done=ledger.done.copy(), path=ledger.input_path, route=plan.route,
                lookahead=lookahead_pool(self.pools, plan.model, spec, self.settings.admission_order,
                                         self.settings.admission_lookahead))
            if plan.model in self.state.load_errors:
                self.reported.pop(plan.model, None)  # report again, so the new batch gets the notice too
        self.outbox.put(Check(info.id))  # a batch whose lines were all written before a crash ends now

    # -- models --------------------------------------------------------------------------------------
    def _runnable(self, feed: BatchFeed) -> bool:
        return feed.spec is not None and not self._held_back(feed.model)

    def _held_back(self, model: str) -> bool:
        """A model whose last load failed waits out its backoff, and is asked again once after it."""
        failure = self.state.load_errors.get(model)
        if failure is None:
            return False
        return time.monotonic() < failure.retry_at or self.asked.get(model, -1.0) > failure.at

    def report_models(self) -> None:
        """Tell the store what changed about the models: loaded, or failed to load (with the notice
        its waiting batches show), so the API can show it without asking this process."""
        now_mono, now = time.monotonic(), time.time()
        current: dict[str, tuple[str, int]] = {m: ("loaded", 0) for m in list(self.state.windows)}
        failures = dict(self.state.load_errors)
        for model, failure in failures.items():
            if model not in current:
                current[model] = ("load_failed", failure.attempts)
        for model, failure in failures.items():
            if failure.code == "model_unhealthy" and self.rewound.get(model) != failure.at:
                # The loop dropped this model's in-flight lines: read its batches again from the
                # writer's record of written lines (the next poll re-opens them; a line written
                # meanwhile is dropped as a duplicate by the ledger).
                self.rewound[model] = failure.at
                for key in [k for k, f in self.feeds.items() if f.model == model]:
                    del self.feeds[key]
        for model, what in current.items():
            if self.reported.get(model) == what:
                continue
            if what[0] == "loaded":
                self.models.loaded(model, now)
            else:
                failure = failures[model]
                wait = max(0.0, failure.retry_at - now_mono)
                what_failed = "failed to load" if failure.code == "model_load_failed" else "was stopped"
                notice = {"code": failure.code, "param": "model", "line": None,
                          "message": f"The model {model!r} {what_failed} (attempt {failure.attempts}): "
                                     f"{failure.error.rstrip('.')}. Retrying in {wait:.0f} s; the batch waits "
                                     "in_progress until the model loads, the batch is cancelled, or it expires."}
                self.models.load_failed(model, notice, error=failure.error, attempts=failure.attempts,
                                        retry_at=now + wait, now=now,
                                        state="load_failed" if failure.code == "model_load_failed" else "stopped")
            self.reported[model] = what
        for model in [m for m in self.reported if m not in current]:
            self.models.unloaded(model)
            del self.reported[model]

    def choose_models(self) -> None:
        waiting: dict[str, dict[str, int]] = {}  # task -> model -> oldest seq with unread lines
        for feed in self.feeds.values():
            if feed.exhausted or feed.spec is None or not self._runnable(feed):
                continue
            per_task = waiting.setdefault(feed.spec.task, {})
            per_task[feed.model] = min(per_task.get(feed.model, feed.seq), feed.seq)
        now = time.monotonic()
        for task, models in waiting.items():
            current = self.slots.get(task)
            if current in self.state.load_errors:
                current = None
            if task not in self.draining:
                others = [m for m in models if m != current]
                if not others:
                    continue
                if current in models and now - self.loaded_at[task] <= SWITCH_QUANTUM:
                    continue
                if current is not None:
                    self.draining[task] = current  # stop feeding it
            old = self.draining.get(task)
            if old is not None:
                window = self.state.windows.get(old)
                if window is not None and window.used > 0:
                    continue  # wait until its in-flight lines are written
                del self.draining[task]
            candidates = {m: s for m, s in models.items() if m != old} or models
            target = min(candidates, key=lambda m: candidates[m])
            spec = self.registry.get(target)
            assert spec is not None
            logger.info("model switch task=%s from=%s to=%s", task, old or "-", target)
            self.inbox.put(Load(spec))
            self.slots[task] = target
            self.loaded_at[task] = now
            self.asked[target] = now

    # -- lines ---------------------------------------------------------------------------------------
    def feed_pass(self) -> bool:
        """Fill each loaded model's free window room from its batches, in the shares shares.py
        decides (fair across owners, then across an owner's batches, deadlines weighing in), until
        the windows are full or nothing is left; True if any line moved.

        Each model's free window room is taken in one go and its lines leave in one Feed, so the
        per-line cost is reading and parsing the line, not locks and queue hand-offs."""
        runnable: dict[str, list[BatchFeed]] = {}
        for feed in list(self.feeds.values()):  # a damaged input found here drops its feeds
            if feed.exhausted:
                continue
            if feed.spec is None:
                self._feed_errors(feed)
                continue
            if self._held_back(feed.model):
                continue  # waits for the model to load; its batch carries the notice
            assert feed.spec is not None
            task = feed.spec.task
            if self.slots.get(task) == feed.model and task not in self.draining \
                    and feed.model in self.state.windows:
                runnable.setdefault(feed.model, []).append(feed)
        moved = 0
        now = time.time()
        for model, feeds in runnable.items():
            window = self.state.windows.get(model)
            if window is None:
                continue
            room = window.take_up_to(PASS_LINES)
            if room == 0:
                continue  # the loop's give() wakes this thread when lines finish
            shares = self.shares.get(model)
            if shares is None:
                shares = self.shares[model] = Shares(self.settings.completion_window_seconds,
                                                     self.settings.deadline_max_weight)
            turn = shares.round(feeds, now)
            reqs: list[LineRequest] = []
            while (pick := turn.pick(room - len(reqs))) is not None:
                feed, n = pick
                given = 0
                done = feed.exhausted  # dropped during this pass (its batch's input is damaged)
                while not done and given < n:
                    try:
                        item = feed.next_request()
                    except InputDamaged as exc:
                        self._damaged(feed.batch_id, exc)
                        reqs = [r for r in reqs if r.batch_id != feed.batch_id]
                        given, done = 0, True
                        break
                    if isinstance(item, LineRequest):
                        reqs.append(item)
                        given += 1
                    elif item is None:
                        done = True
                    else:
                        self._direct(feed, item)  # costs no slot, so no share either
                        moved += 1
                turn.charge(given, done)
            window.give(room - len(reqs), wake=False)
            if reqs:
                self.inbox.put(Feed(model, reqs))
                moved += len(reqs)
        for model in [m for m in self.shares if m not in runnable]:
            del self.shares[model]  # nothing of it runs now: its virtual times would only go stale
        return moved > 0

    def _feed_errors(self, feed: BatchFeed) -> None:
        """Error rows for every line of a batch whose model models.yaml no longer lists."""
        error = LineError(f"The model {feed.model!r} does not exist on this server.", status=404,
                          code="model_not_found", param="model")
        rows = []
        damage = None
        for _ in range(DIRECT_PER_PASS):
            try:
                item = feed.next_request()
            except InputDamaged as exc:
                damage = exc
                break
            if item is None:
                break
            if isinstance(item, LineRequest):
                item = BadLine(item.line, item.custom_id, error)
            rows.append(self._row(feed, item))
        if rows:
            self.outbox.put(Results(rows))  # the lines read before the damage was found are sound
        if damage is not None:
            self._damaged(feed.batch_id, damage)

    def _direct(self, feed: BatchFeed, bad: BadLine) -> None:
        self.outbox.put(Results([self._row(feed, bad)]))

    @staticmethod
    def _row(feed: BatchFeed, bad: BadLine) -> Result:
        result = LineResult(f"{feed.batch_id}:{bad.line}", bad.error.status, bad.error.body())
        return Result(feed.batch_id, bad.line, bad.custom_id, feed.model, result)
