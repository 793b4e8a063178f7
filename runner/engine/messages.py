"""Messages between the engine's threads, and the state they share.

feeder --(Feed, Abort, Load)--> loop --(Results, Close)--> writer
feeder --(Results for lines no backend can run, Close, Check)--> writer

Lines travel in lists (a Feed per model per feeding pass, a Results per step): a queue hand-off
costs a lock and may cost a GIL switch, so paying it per line capped the whole engine at a few
thousand lines/s with an infinitely fast model.

Ordering carries the exactly-once guarantee: the feeder stops feeding a batch before it sends its
Abort; the loop drops that batch's in-flight lines before it forwards the Close; so every Result
of a batch reaches the writer before its Close, and the writer fills in the rest from the input.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from runner.engine.backend import LineRequest, LineResult
from runner.engine.ledger import Ledger
from runner.engine.window import Window
from runner.jsonl import InputDamaged
from runner.model_specs import ModelSpec


@dataclass(frozen=True, slots=True)
class Feed:
    """Lines for the loaded model `model`, in reading order."""

    model: str
    reqs: list[LineRequest]


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the batch's in-flight lines, then forward Close(batch_id, reason, damage) to the writer."""

    batch_id: str
    reason: str  # "cancelled" | "expired" | "failed" (its input file is damaged)
    damage: InputDamaged | None = None


@dataclass(frozen=True, slots=True)
class Load:
    """Load `spec` in its task's slot, closing the model held there first."""

    spec: ModelSpec


@dataclass(frozen=True, slots=True)
class Result:
    batch_id: str
    line: int  # 1-based line number in the batch's input file
    custom_id: str
    model: str
    result: LineResult


@dataclass(frozen=True, slots=True)
class Results:
    """Finished lines, in the order they finished."""

    items: list[Result]


@dataclass(frozen=True, slots=True)
class Close:
    """Write every unwritten line as `batch_<reason>`, then end the batch. With `damage` (reason
    "failed"), no line is written: the batch ends as failed on its damaged input."""

    batch_id: str
    reason: str
    damage: InputDamaged | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """End the batch if every line is written (or finish a batch left in `finalizing`)."""

    batch_id: str


STOP = object()


@dataclass
class Stats:
    lines: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A model's last failed load (written by the loop); the feeder retries it from `retry_at` on."""

    error: str
    attempts: int  # failed loads in a row
    at: float  # time.monotonic() of the failure
    retry_at: float  # time.monotonic() from which the feeder may ask again
    # model_load_failed: the load raised; model_unhealthy: the loop stopped a loaded model after a
    # run of 5xx rows (its in-flight lines are fed again once it loads)
    code: str = "model_load_failed"


@dataclass
class EngineState:
    """What the threads share: loaded models' windows, open ledgers, ended batches, throughput."""

    windows: dict[str, Window] = field(default_factory=dict)
    load_errors: dict[str, LoadFailure] = field(default_factory=dict)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    stats: dict[str, Stats] = field(default_factory=lambda: defaultdict(Stats))
    generated: dict[str, int] = field(default_factory=dict)  # model -> backend.generated_tokens()
    # finished model loads (model, ok, seconds, unix time), until the writer reports them (stats.py)
    loads: list[tuple[str, bool, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The feeder sleeps on this when it has nothing to do; set when window room frees, a model
    # loads or fails, the doorbell rings (store/doorbell.py) or the engine stops.
    wake: threading.Event = field(default_factory=threading.Event)

    def register(self, ledger: Ledger) -> None:
        with self.lock:
            self.ledgers[ledger.batch_id] = ledger

    def unregister(self, batch_id: str) -> None:
        with self.lock:
            self.ledgers.pop(batch_id, None)
            self.ended.add(batch_id)

    def ledger(self, batch_id: str) -> Ledger | None:
        with self.lock:
            return self.ledgers.get(batch_id)

    def add_load(self, model: str, ok: bool, seconds: float) -> None:
        with self.lock:
            self.loads.append((model, ok, seconds, time.time()))

    def take_loads(self) -> list[tuple[str, bool, float, float]]:
        with self.lock:
            taken, self.loads = self.loads, []
            return taken

    def open_ledgers(self) -> list[Ledger]:
        with self.lock:
            return list(self.ledgers.values())
