"""The engine process: settings -> stores, threads and loop; runs until SIGTERM / SIGINT.

Three threads share EngineState and two queues (see messages.py): the feeder (reads input, polls
statuses, decides model loads), the loop (this module's caller thread; backends only, no IO) and
the writer (appends rows, checkpoints, ends batches). Engine can also run inside a test process:
`Engine(settings, registry).start()` runs the loop in a thread and `stop()` ends it cleanly.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import IO, Any

from runner.engine.backend import Backend
from runner.engine.engine_lock import LockWait, acquire_engine_lock
from runner.engine.factory import make_backend
from runner.engine.feeder import Feeder
from runner.engine.heartbeat import FILENAME as HEARTBEAT_FILE
from runner.engine.heartbeat import Heartbeat, WatchedQueue
from runner.engine.lifeline import die_with_parent, start_reaper
from runner.engine.loop import EngineLoop
from runner.engine.messages import STOP, EngineState
from runner.engine.sources import Source, StoreSource
from runner.engine.writer import Writer
from runner.errors import ConfigError, EngineDead
from runner.log import configure_logging
from runner.model_specs import ModelRegistry, ModelSpec, load_model_specs
from runner.settings import Settings

logger = logging.getLogger(__name__)


class Engine:
    """One engine: feeder and writer threads around the loop, over one Source of batches (the
    server's store by default; `runner run` passes a FileSource)."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None, *,
                 backend_factory: Callable[[ModelSpec, Settings], Backend] = make_backend,
                 source: Source | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else load_model_specs(settings.models_path)
        self.source: Source = source if source is not None else StoreSource(settings)
        self.state = EngineState()
        self.stopping = threading.Event()
        self.inbox: queue.Queue[object] = queue.Queue()
        # The writer's inbox records when the writer last came back to it: the heartbeat's pulse.
        self.outbox: WatchedQueue = WatchedQueue()
        self.lock_wait = LockWait()
        self.phase = "starting"
        self.loop = EngineLoop(settings, self.inbox, self.outbox, self.state, backend_factory)
        self.feeder = Feeder(settings, self.registry, self.source, self.state, self.inbox, self.outbox,
                             self.stopping)
        self.writer = Writer(settings, self.source, self.state, self.outbox, self.stopping)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Run the loop on this thread until stop(); then drain the writer and checkpoint."""
        # One engine per data dir (or per `runner run` output): a second one would write the same
        # lines twice.
        self.phase = "waiting_for_lock"
        try:
            lock = self._acquire()
        except ConfigError as exc:
            self.error = exc
            lock = None
        if lock is None:
            self.source.close()
            return
        self.phase = "running"
        try:
            self._run()
        finally:
            self.phase = "stopped"
            lock.close()

    def _acquire(self) -> IO[bytes] | None:
        if isinstance(self.source, StoreSource):
            # The server's engine.lock: the holder says who it is, a stale one is killed (engine_lock.py).
            return acquire_engine_lock(self.source.lock_path, self.stopping, self.lock_wait)
        return self.source.acquire(self.stopping)

    def health_report(self) -> dict[str, Any]:
        """What the heartbeat file carries to the supervisor (see heartbeat.py)."""
        return {"phase": self.phase,
                "writer_age": round(self.outbox.consumer_age(), 3) if self.phase == "running" else 0.0,
                "waiting_for_lock": self.lock_wait.snapshot()}

    def _run(self) -> None:
        logger.info("engine started models=%s", ",".join(self.registry.ids))
        self.writer.start()
        self.feeder.start()
        try:
            self.loop.run(self.stopping)
        except BaseException as exc:
            logger.exception("engine loop died")
            self.error = exc
        finally:
            self.stopping.set()
            self.state.wake.set()  # the feeder may sleep up to a poll interval otherwise
            logger.info("[shutdown] stopping feeder")
            self.feeder.join()
            logger.info("[shutdown] draining writer")
            self.outbox.put(STOP)
            self.writer.join()
            self.source.close()
            self.error = self.error or self.feeder.error or self.writer.error
            logger.info("[shutdown] engine stopped%s", " with an error" if self.error else "")

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self.run, name="engine-loop", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """The thread start() began is still running (the engine has not stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)


def run_engine(settings: Settings, parent_pid: int | None = None) -> None:
    """`runner engine`: the process the supervisor keeps alive (`parent_pid`: the API that started it)."""
    configure_logging(settings.log_level, process="engine")
    die_with_parent(parent_pid)
    reaper = start_reaper()  # noqa: F841 - lives as long as this process
    engine = Engine(settings)
    Heartbeat(settings.data_path / HEARTBEAT_FILE, engine.health_report).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("[shutdown] signal %s received", signal.Signals(signum).name)
        engine.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine.run()
    if engine.error is not None:
        raise EngineDead(f"engine stopped on an error: {engine.error!r}") from engine.error
