"""Sharing the engine across owners and deadlines (runner/engine/shares.py): the pure scheduler first,
then the policy at the engine seam (the API in process and a real Engine on the simulated backend)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.engine.shares import CHUNK, Shares, deadline_weight
from runner.model_specs import ModelRegistry
from runner.settings import Settings
from runner.store import Database
from tests.engine.conftest import Harness, chat_line

DAY = 86_400.0
NOW = 1_000_000.0


@dataclass
class B:
    batch_id: str
    owner: str = "local"
    expires_at: float | None = None
    seq: int = 0


def run(shares: Shares, members: list[B], lines: int, room: int, *, left: dict[str, int] | None = None,
        now: float = NOW, order: list[str] | None = None) -> Counter[str]:
    """Hand out `lines` lines in rounds of `room` free slots; `left`: lines each batch has (else endless).
    `order` collects the batch ids line by line."""
    given: Counter[str] = Counter()
    while lines > 0:
        active = [m for m in members if left is None or left[m.batch_id] > 0]
        if not active:
            break
        turn = shares.round(active, now)
        r = min(room, lines)
        while (pick := turn.pick(r)) is not None:
            m, n = pick
            k = n if left is None else min(n, left[m.batch_id])
            given[m.batch_id] += k
            if order is not None:
                order.extend([m.batch_id] * k)
            r -= k
            lines -= k
            if left is not None:
                left[m.batch_id] -= k
            turn.charge(k, done=left is not None and left[m.batch_id] == 0)
    return given


def by_owner(given: Counter[str], members: list[B]) -> Counter[str]:
    owners: Counter[str] = Counter()
    for m in members:
        owners[m.owner] += given[m.batch_id]
    return owners


def test_weight_is_window_over_time_left_clamped() -> None:
    assert deadline_weight(None, NOW, DAY, 64) == 1.0
    assert deadline_weight(NOW + DAY, NOW, DAY, 64) == 1.0  # a fresh 24h batch
    assert deadline_weight(NOW + 3600, NOW, DAY, 64) == pytest.approx(24.0)  # a fresh 1h batch
    assert deadline_weight(NOW + 60, NOW, DAY, 64) == 64.0  # near its end: capped
    assert deadline_weight(NOW - 5, NOW, DAY, 64) == 64.0  # past it (not yet polled as expired)
    assert deadline_weight(NOW + 10 * DAY, NOW, DAY, 64) == 1.0  # never below 1


@pytest.mark.parametrize("room", [1, 3, 16, 256])
def test_owners_share_equally_whatever_their_batch_counts_and_sizes(room: int) -> None:
    """Owner a: five batches; owner b: one. Each owner gets half, not a 1/6 per batch."""
    members = [B(f"a{i}", "a", seq=i) for i in range(5)] + [B("b0", "b", seq=9)]
    given = run(Shares(DAY, 64), members, 6000, room)
    owners = by_owner(given, members)
    assert abs(owners["a"] - owners["b"]) <= 2 * CHUNK, owners
    # and a's five batches split its half equally among them
    assert max(given[f"a{i}"] for i in range(5)) - min(given[f"a{i}"] for i in range(5)) <= 2 * CHUNK, given


def test_a_small_batch_of_another_owner_finishes_at_half_the_engine() -> None:
    """a has 50,000 lines queued, b 100: b's lines are done after ~200 lines, not after a's."""
    members = [B("big", "a", seq=0), B("small", "b", seq=1)]
    left = {"big": 50_000, "small": 100}
    order: list[str] = []
    run(Shares(DAY, 64), members, 400, 16, left=left, order=order)
    last_small = max(i for i, b in enumerate(order) if b == "small")
    assert last_small < 200 + 2 * CHUNK
    assert left["small"] == 0


def test_near_deadline_gets_more_far_deadline_is_never_starved() -> None:
    """A 1h batch weighs 24x a 24h one; the 24h batch still gets a line in every few dozen."""
    members = [B("day", expires_at=NOW + DAY, seq=0), B("hour", expires_at=NOW + 3600, seq=1)]
    order: list[str] = []
    given = run(Shares(DAY, 64), members, 5000, 4, order=order)
    assert given["hour"] / given["day"] == pytest.approx(24, rel=0.15)
    # no starvation: the 24h batch appears in every stretch of 24 + 2 chunks of lines
    gaps = [j - i for i, j in zip([-1] + [k for k, b in enumerate(order) if b == "day"],
                                   [k for k, b in enumerate(order) if b == "day"] + [len(order)], strict=True)]
    assert max(gaps) <= 24 * CHUNK + 2 * CHUNK


def test_at_the_cap_the_far_batch_still_runs() -> None:
    """A batch a second from its end weighs max_weight (4 here); the other keeps 1/(1 + 4) of the lines."""
    members = [B("far", expires_at=NOW + DAY, seq=0), B("late", expires_at=NOW + 1, seq=1)]
    given = run(Shares(DAY, 4), members, 5000, 1)
    assert given["far"] == pytest.approx(1000, abs=2 * CHUNK)


def test_owner_weight_is_its_heaviest_batch_so_splitting_buys_nothing() -> None:
    """a: a 1h batch and nine 24h batches; b: one 1h batch. Both owners weigh 24 (not a's sum, 33):
    equal halves. Within a, the 1h batch gets 24x each 24h one. Against c with one 24h batch, a
    weighs 24 to 1."""
    members = [B("a-hour", "a", NOW + 3600, 0)] + [B(f"a-day{i}", "a", NOW + DAY, 1 + i) for i in range(9)] \
        + [B("b-hour", "b", NOW + 3600, 20)]
    given = run(Shares(DAY, 64), members, 33 * 400, 8)
    owners = by_owner(given, members)
    assert abs(owners["a"] - owners["b"]) <= 2 * CHUNK, owners
    assert given["a-hour"] / given["a-day0"] == pytest.approx(24, rel=0.25)
    members = [m for m in members if m.owner == "a"] + [B("c-day", "c", NOW + DAY, 30)]
    owners = by_owner(run(Shares(DAY, 64), members, 25 * 400, 8), members)
    assert owners["a"] / owners["c"] == pytest.approx(24, rel=0.15), owners


def test_newcomer_gets_no_banked_credit() -> None:
    """a runs alone for a long time; b arriving then gets half from then on, not everything until it
    has caught up. Same for a batch new to its owner, and for an owner back after a pause."""
    shares = Shares(DAY, 64)
    a, a2, b = B("a", "a", seq=0), B("a2", "a", seq=1), B("b", "b", seq=2)
    run(shares, [a], 10_000, 16)
    given = run(shares, [a, b], 400, 16)
    assert abs(given["a"] - given["b"]) <= 2 * CHUNK, given
    # a batch new to its owner joins at its sibling's virtual time: it splits a's half, not more
    given = run(shares, [a, a2, b], 800, 16)
    assert abs(given["a"] - given["a2"]) <= 2 * CHUNK and abs(given["a"] + given["a2"] - given["b"]) <= 2 * CHUNK
    # b stops for a while, then returns: no credit for the pause either
    run(shares, [a, a2], 5000, 16)
    given = run(shares, [a, a2, b], 800, 16)
    assert abs(given["a"] + given["a2"] - given["b"]) <= 2 * CHUNK, given


def test_one_batch_takes_the_whole_room_in_one_pick() -> None:
    """The common case (one runnable batch) costs one pick per pass, not one per chunk."""
    turn = Shares(DAY, 64).round([B("only")], NOW)
    pick = turn.pick(4096)
    assert pick is not None and pick[1] == 4096
    turn.charge(4096)
    turn2 = Shares(DAY, 64).round([B("x"), B("y", seq=1)], NOW)
    pick = turn2.pick(4096)
    assert pick is not None and pick[1] == CHUNK


def test_a_batch_that_runs_out_leaves_the_round() -> None:
    members = [B("short", "a", seq=0), B("long", "b", seq=1)]
    left = {"short": 5, "long": 1000}
    given = run(Shares(DAY, 64), members, 100, 100, left=left)
    assert given == Counter({"short": 5, "long": 95})


# -- the engine seam ------------------------------------------------------------------------------------

A = {"authorization": "Bearer key-alice"}
BOB = {"authorization": "Bearer key-bob"}


def _slow(n: int, tag: str) -> list[dict]:
    lines = [chat_line(i, model="sim-slow", max_tokens=4) for i in range(n)]
    for x in lines:
        x["custom_id"] = f"{tag}-{x['custom_id']}"
    return lines


@pytest.fixture
def keyed(settings: Settings, registry: ModelRegistry) -> Iterator[Harness]:
    with TestClient(create_app(settings.replace(api_keys=("key-alice", "key-bob")), registry)) as client:
        h = Harness(client, settings, registry)
        try:
            yield h
        finally:
            h.stop_engine()


def test_engine_shares_between_owners_not_batches(keyed: Harness) -> None:
    """alice queues four batches, bob one smaller one after them: bob gets about half the engine
    (round-robin over batches gave him a fifth), and alice's batches all keep moving."""
    h = keyed
    alice = [h.submit(_slow(80, f"a{i}"), headers=A) for i in range(4)]
    bob = h.submit(_slow(40, "b"), headers=BOB)
    for b in alice + [bob]:
        h.wait_status(b["id"], "in_progress")
    h.start_engine()
    done = h.wait_status(bob["id"], "completed", timeout=60)
    assert done["request_counts"]["completed"] == 40
    counts = [h.batch(b["id"])["request_counts"]["completed"] for b in alice]
    print(f"\nbob's 40 lines done; alice's four batches meanwhile: {counts}")
    # equal owner shares: alice has had about bob's 40 lines (plus the lines in flight) when his
    # batch ends; batch round-robin would have given her 4 x 40 = 160
    assert sum(counts) <= 40 + 16 + 2 * 8, counts
    assert min(counts) >= 4, counts  # her batches share her half: none waits for the others
    for b in alice:
        assert h.wait_status(b["id"], "completed", timeout=60)["request_counts"]["completed"] == 80


def test_near_deadline_goes_first_without_stopping_the_24h_batch(harness: Harness) -> None:
    """Two batches of one owner: one with 3 h left of the 24 h window (weight 8) is admitted ahead of
    a fresh 24h one, which still gets lines meanwhile."""
    h = harness
    day = h.submit(_slow(160, "day"))
    soon = h.submit(_slow(120, "soon"))
    for b in (day, soon):
        h.wait_status(b["id"], "in_progress")
    db = Database(Path(h.settings.db_path))
    try:
        with db.transaction() as conn:
            conn.execute("UPDATE batches SET expires_at = ? WHERE id = ?", (int(time.time()) + 3 * 3600, soon["id"]))
    finally:
        db.close()
    h.start_engine()
    h.wait_status(soon["id"], "completed", timeout=60)
    ahead = h.batch(day["id"])["request_counts"]["completed"]
    print(f"\n3h-left batch's 120 lines done; the 24h batch meanwhile: {ahead}")
    # weight 8 to 1: about 120 / 8 = 15 lines of the 24h batch (+ its first chunk), not the 120 that
    # equal shares gave; and not 0 either
    assert 4 <= ahead <= 45, ahead
    assert h.wait_status(day["id"], "completed", timeout=60)["request_counts"]["completed"] == 160
