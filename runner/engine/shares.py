"""Shares: which batch's lines fill the engine's free slots: fair across owners, then across an
owner's batches, with work near its deadline weighted up.

Two-level weighted fair sharing by virtual time (stride scheduling). Each owner (an API key; "local"
without keys and for `runner run`) and each batch has a virtual time, advanced by lines_given /
weight when it is given lines; the owner with the lowest virtual time goes next, and within it the
batch with the lowest. So over time each owner gets a share of the lines proportional to its weight
however many batches, and however many lines, it has queued; and the same holds among one owner's
batches.

Weights. A batch's weight is clamp(W / max(time_left, 1 s), 1, max_weight), W being the longest
completion window (settings.completion_window_seconds) and time_left its expires_at minus now (no
expires_at: 1). A fresh "24h" batch weighs 1, a fresh "1h" one 24; work rises as its deadline nears,
up to max_weight (RUNNER_DEADLINE_MAX_WEIGHT). An owner weighs as much as its heaviest runnable
batch, so splitting work into many batches buys nothing. Every weight lies between 1 and
max_weight, so a runnable batch's share never falls below 1/max_weight of a competitor's: a "24h"
batch beside a "1h" one still gets a line in every 25 or so, and nothing starves.

Virtual times last across rounds (a round is one feeding pass of one model's free window room), so
the split is fair over time even when each pass has only a slot or two to give. A newcomer (a new
owner, or a batch new to its owner) joins at the current minimum of those already there: it gets no
credit banked for the time it was absent, and takes no credit from the others. Lines go out in
chunks of CHUNK (the whole room when only one batch is runnable), so the cost per line stays one
read and parse, not a heap operation.

Pure logic: no threads, no clocks of its own (the caller passes `now`), so it is unit-tested alone.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

CHUNK = 8  # lines per pick while several batches compete


class Member(Protocol):
    """What a share is computed from (the feeder's BatchFeed has these)."""

    @property
    def batch_id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def seq(self) -> int: ...


M = TypeVar("M", bound=Member)


def deadline_weight(expires_at: float | None, now: float, window_seconds: float, max_weight: float) -> float:
    """clamp(W / max(time_left, 1), 1, max_weight); 1 without a deadline."""
    if expires_at is None:
        return 1.0
    left = max(expires_at - now, 1.0)
    return min(max(window_seconds / left, 1.0), max(max_weight, 1.0))


class Shares:
    """Virtual times of owners and batches for one model's window, kept between rounds."""

    def __init__(self, window_seconds: float, max_weight: float, chunk: int = CHUNK) -> None:
        self.window_seconds = window_seconds
        self.max_weight = max_weight
        self.chunk = max(1, chunk)
        self.owner_time: dict[str, float] = {}
        self.batch_time: dict[str, float] = {}  # batch id -> virtual time among its owner's batches

    def weight(self, expires_at: float | None, now: float) -> float:
        return deadline_weight(expires_at, now, self.window_seconds, self.max_weight)

    def round(self, members: Sequence[M], now: float) -> Round[M]:
        """Start handing out one pass's room among `members` (the runnable batches)."""
        return Round(self, members, now)


class _Owner(Generic[M]):
    __slots__ = ("name", "first", "weight", "heap")

    def __init__(self, name: str, first: int) -> None:
        self.name = name
        self.first = first  # its oldest batch's seq: breaks ties between owners, oldest first
        self.weight = 1.0
        self.heap: list[tuple[float, int, int, M, float]] = []  # (vtime, seq, n, member, weight)


class Round(Generic[M]):
    """One pass: pick() the batch that goes next, then charge() what it was given."""

    def __init__(self, shares: Shares, members: Sequence[M], now: float) -> None:
        self.shares = shares
        owners: dict[str, _Owner[M]] = {}
        weighted: list[tuple[M, float]] = []
        for m in members:
            w = shares.weight(m.expires_at, now)
            weighted.append((m, w))
            o = owners.get(m.owner)
            if o is None:
                o = owners[m.owner] = _Owner(m.owner, m.seq)
            o.first = min(o.first, m.seq)
            o.weight = max(o.weight, w)
        # Forget who is gone (their credit or debt goes with them), then seat newcomers at the
        # minimum of those who stay, so absence banks nothing.
        bt, ot = shares.batch_time, shares.owner_time
        ids = {m.batch_id for m in members}
        for gone in [b for b in bt if b not in ids]:
            del bt[gone]
        for gone in [o for o in ot if o not in owners]:
            del ot[gone]
        floor = min((ot[o] for o in owners if o in ot), default=0.0)
        for name in owners:
            ot.setdefault(name, floor)
        staying: dict[str, float] = {}
        for m, _ in weighted:
            if m.batch_id in bt:
                t = bt[m.batch_id]
                staying[m.owner] = min(staying.get(m.owner, t), t)
        for n, (m, w) in enumerate(weighted):
            t = bt.setdefault(m.batch_id, staying.get(m.owner, 0.0))
            owners[m.owner].heap.append((t, m.seq, n, m, w))
        for o in owners.values():
            heapq.heapify(o.heap)
        self.owners = owners
        self.heap = [(ot[o.name], o.first, o.name) for o in owners.values()]
        heapq.heapify(self.heap)
        self.left = len(members)
        self._picked: _Owner[M] | None = None

    def pick(self, room: int) -> tuple[M, int] | None:
        """The batch to take lines from next, and at most how many; None when none is left."""
        if not self.heap or room <= 0:
            return None
        owner = self.owners[self.heap[0][2]]
        self._picked = owner
        member = owner.heap[0][3]
        return member, (room if self.left == 1 else min(self.shares.chunk, room))

    def charge(self, given: int, done: bool = False) -> None:
        """The picked batch was given `given` lines; `done`: it has none left (it leaves the round)."""
        owner = self._picked
        assert owner is not None, "charge() without pick()"
        self._picked = None
        t, seq, n, member, w = heapq.heappop(owner.heap)
        if done:
            self.left -= 1
            self.shares.batch_time.pop(member.batch_id, None)
        else:
            t += given / w
            self.shares.batch_time[member.batch_id] = t
            heapq.heappush(owner.heap, (t, seq, n, member, w))
        ot, _, name = heapq.heappop(self.heap)
        ot += given / owner.weight
        if owner.heap:
            if done:  # its heaviest batch may have left
                owner.weight = max(e[4] for e in owner.heap)
            self.shares.owner_time[name] = ot
            heapq.heappush(self.heap, (ot, owner.first, name))
        else:
            # An owner out of lines this round keeps its virtual time for the next one (it may have
            # batches of this model that simply ended; a new one joins at the floor then).
            self.shares.owner_time[name] = ot
