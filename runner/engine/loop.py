"""Loop: Feed messages -> backend add/step/abort -> Results for the writer. No IO here.

The loop runs on the engine's main thread and touches only its two queues, the shared windows and
the backends. Each turn: 1) drain the inbox (Feed -> backend.add, Abort -> backend.abort + Close to
the writer, Load -> close the old model of that task, make the new one); 2) step every backend that
has unfinished lines and hand its finished lines to the writer in one Results. It blocks on the inbox only when no
backend has work, so step() is never called with nothing in flight.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.engine.messages import Abort, Close, EngineState, Feed, Load, LoadFailure, Result, Results
from runner.engine.window import Window
from runner.errors import EngineDead, LineError, openai_error_body
from runner.model_specs import ModelSpec
from runner.settings import Settings

logger = logging.getLogger(__name__)

MAX_DRAIN = 4096  # messages taken per turn, so a full inbox never starves step()
# seconds an idle loop waits on its inbox before it looks at the stop flag again: at most that much
# later to stop, and 4 wakeups a second of an idle engine, not 20
IDLE_WAIT = 0.25
MAX_LOAD_ERROR = 500  # characters of a load error kept: it is shown on every waiting Batch and in /health
# 5xx rows in a row after which a model is stopped (unloaded, its batches held, reloaded after a
# backoff): a model that fails every request must not turn a whole batch into 500 rows (see #12).
MAX_5XX_RUN = 16


class EngineLoop:
    """The busy loop; holds the loaded backends and the in-flight map (key -> batch, custom_id, model)."""

    def __init__(self, settings: Settings, inbox: queue.Queue[object], outbox: queue.Queue[object],
                 state: EngineState, make_backend: Callable[[ModelSpec, Settings], Backend]) -> None:
        self.settings = settings
        self.inbox = inbox
        self.outbox = outbox
        self.state = state
        self.make_backend = make_backend
        self.backends: dict[str, Backend] = {}  # model id -> backend
        self.slots: dict[str, str] = {}  # task -> model id
        self.inflight: dict[str, tuple[str, int, str, str]] = {}  # key -> batch, line, custom_id, model
        self.by_batch: dict[str, set[str]] = {}
        self.pending: list[Result] = []  # finished lines not yet handed to the writer
        self.freed: dict[str, int] = {}  # model -> window slots to give back with them
        self.bad_run: dict[str, int] = {}  # model -> 5xx rows in a row
        self.stopped: set[str] = set()  # models stopped for a run of 5xx rows, until they load again

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.run_once()
        finally:
            self._flush()
            for model in list(self.backends):
                self._unload(model)

    def run_once(self) -> None:
        # 1) drain the inbox; wait on it only when no backend has work
        busy = any(b.has_unfinished() for b in self.backends.values())
        self._drain(block=not busy)
        # 2) step every backend with work and route its finished lines to the writer
        for model, backend in list(self.backends.items()):
            if backend.has_unfinished():
                for result in backend.step():
                    self._emit(result, model)
                generated = backend.generated_tokens()
                if generated is not None:
                    self.state.generated[model] = generated
        self._flush()

    # -- inbox ---------------------------------------------------------------------------------------
    def _drain(self, *, block: bool) -> None:
        try:
            msg = self.inbox.get(timeout=IDLE_WAIT) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        for _ in range(MAX_DRAIN):
            if isinstance(msg, Feed):
                for req in msg.reqs:
                    self._add(req, msg.model)
            elif isinstance(msg, Abort):
                self._abort(msg)
            elif isinstance(msg, Load):
                self._load(msg.spec)
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _add(self, req: LineRequest, model: str) -> None:
        if model in self.stopped:
            return  # fed before the stop reached the feeder: it feeds the line again after the reload
        self.inflight[req.key] = (req.batch_id, req.line, req.custom_id, model)
        self.by_batch.setdefault(req.batch_id, set()).add(req.key)
        backend = self.backends.get(model)
        try:
            if backend is None:
                raise LineError(f"The model {model!r} is not loaded.", status=503, code="model_not_loaded")
            backend.add(req)
        except LineError as exc:
            self._emit(LineResult(req.key, exc.status, exc.body()), model)
        except EngineDead:
            # The engine is gone, not the line: no row. The loop ends, the process exits, the
            # supervisor restarts it, and the line is fed again from the checkpoint (see #12).
            raise
        except Exception as exc:
            logger.exception("backend.add failed key=%s", req.key)
            detail = f"{type(exc).__name__}: {exc}"[:MAX_LOAD_ERROR]
            body = openai_error_body(f"The engine failed to run this request ({detail})", "server_error", None,
                                     "internal_error")
            self._emit(LineResult(req.key, 500, body), model)

    def _abort(self, msg: Abort) -> None:
        self._flush()  # every Result of the batch reaches the writer before its Close
        keys = self.by_batch.pop(msg.batch_id, set())
        per_model: dict[str, list[str]] = {}
        for key in keys:
            meta = self.inflight.pop(key, None)
            if meta is not None:
                per_model.setdefault(meta[3], []).append(key)
        for model, model_keys in per_model.items():
            backend = self.backends.get(model)
            if backend is not None:
                backend.abort(model_keys)
            self._give(model, len(model_keys))
        if keys:
            logger.info("aborted in-flight lines batch=%s lines=%d reason=%s", msg.batch_id, len(keys), msg.reason)
        self.outbox.put(Close(msg.batch_id, msg.reason, msg.damage))

    def _load(self, spec: ModelSpec) -> None:
        old = self.slots.get(spec.task)
        if old == spec.id and spec.id in self.backends:
            return
        if old is not None:
            self._unload(old)
        started = time.monotonic()
        try:
            backend = self.make_backend(spec, self.settings)
        except Exception as exc:
            self.state.add_load(spec.id, False, time.monotonic() - started)
            failure = self._fail(spec.id, f"{type(exc).__name__}: {exc}", "model_load_failed")
            self.state.wake.set()  # the feeder reports the failure to the waiting batches now
            logger.exception("model load failed model=%s attempt=%d retry_at=+%.1fs", spec.id, failure.attempts,
                             failure.retry_at - failure.at)
            return
        self.state.add_load(spec.id, True, time.monotonic() - started)
        self.state.load_errors.pop(spec.id, None)
        self.stopped.discard(spec.id)
        self.backends[spec.id] = backend
        self.slots[spec.task] = spec.id
        window = self.settings.max_inflight or backend.default_max_inflight
        self.state.windows[spec.id] = Window(window, self.state.wake)
        logger.info("model loaded model=%s backend=%s window=%d", spec.id, type(backend).__name__, window)
        self.state.wake.set()  # the feeder fills the new window now

    def _unload(self, model: str) -> None:
        backend = self.backends.pop(model, None)
        self.state.windows.pop(model, None)
        for task, held in list(self.slots.items()):
            if held == model:
                del self.slots[task]
        if backend is not None:
            backend.close()
            logger.info("model unloaded model=%s", model)

    # -- results -------------------------------------------------------------------------------------
    def _emit(self, result: LineResult, model: str) -> None:
        meta = self.inflight.pop(result.key, None)
        if meta is None:
            return  # aborted meanwhile: its batch's Close writes the row
        batch_id, line, custom_id, _ = meta
        keys = self.by_batch.get(batch_id)
        if keys is not None:
            keys.discard(result.key)
            if not keys:
                del self.by_batch[batch_id]
        self.freed[model] = self.freed.get(model, 0) + 1
        self.pending.append(Result(batch_id, line, custom_id, model, result))
        if result.status_code >= 500:
            run = self.bad_run[model] = self.bad_run.get(model, 0) + 1
            if run >= MAX_5XX_RUN:
                self._stop_model(model, result)
        elif model in self.bad_run:
            del self.bad_run[model]

    def _stop_model(self, model: str, last: LineResult) -> None:
        """Stop feeding a model whose last MAX_5XX_RUN rows were all 5xx: drop its in-flight lines
        (no row: the feeder reads its batches again after the reload), unload it, and let the
        feeder retry it after a backoff, as for a failed load; the reason goes on its batches."""
        run = self.bad_run.pop(model, 0)
        self._flush()  # the rows so far reach the writer first
        keys = [k for k, meta in self.inflight.items() if meta[3] == model]
        for key in keys:
            batch_id = self.inflight.pop(key)[0]
            held = self.by_batch.get(batch_id)
            if held is not None:
                held.discard(key)
                if not held:
                    del self.by_batch[batch_id]
        backend = self.backends.get(model)
        if backend is not None and keys:
            backend.abort(keys)
        error = last.body.get("error") if isinstance(last.body, dict) else None
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        failure = self._fail(model, f"{run} requests in a row failed; the last: {message}", "model_unhealthy")
        logger.error("model stopped model=%s failed_in_a_row=%d retry_at=+%.1fs", model, run,
                     failure.retry_at - failure.at)
        self.stopped.add(model)
        self._unload(model)
        self.state.wake.set()

    def _fail(self, model: str, error: str, code: str) -> LoadFailure:
        """Record a failed load (or a stop) for the feeder: it asks again after a doubling backoff."""
        prev = self.state.load_errors.get(model)
        attempts = prev.attempts + 1 if prev is not None else 1
        delay = min(self.settings.model_load_retry_max_delay, 2.0 ** attempts)
        if len(error) > MAX_LOAD_ERROR:
            error = error[:MAX_LOAD_ERROR] + "..."
        now = time.monotonic()
        failure = self.state.load_errors[model] = LoadFailure(error, attempts, now, now + delay, code=code)
        return failure

    def _flush(self) -> None:
        """Hand the finished lines to the writer, then free their window slots."""
        if self.pending:
            self.outbox.put(Results(self.pending))
            self.pending = []
        for model, n in self.freed.items():
            self._give(model, n)
        self.freed.clear()

    def _give(self, model: str, n: int) -> None:
        window = self.state.windows.get(model)
        if window is not None:
            window.give(n)
