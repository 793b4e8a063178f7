"""The feeder sleeps until something happens (#16): the API's doorbell for starts and cancels, the
loop's freed window room, a model load; the timed poll is only the backstop. Here that poll is 30 s,
so anything that finishes in seconds was woken, not polled."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.settings import Settings
from tests.engine.conftest import Harness, chat_line, check_exactly_once


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0,
                    checkpoint_interval=0.05, poll_interval=30.0)


def test_a_batch_created_while_the_engine_idles_starts_at_once(harness: Harness) -> None:
    harness.start_engine()
    first = harness.submit([chat_line(i) for i in range(5)])
    harness.wait_status(first["id"], "completed", timeout=10)  # the model loads on this one
    time.sleep(0.5)  # idle, between two of the feeder's (30 s) polls
    lines = [chat_line(i, max_tokens=4) for i in range(20)]
    started = time.monotonic()
    b = harness.submit(lines)
    b = harness.wait_status(b["id"], "completed", timeout=10)
    assert time.monotonic() - started < 5
    check_exactly_once(harness, b, [x["custom_id"] for x in lines])


def test_a_cancel_reaches_the_running_engine_at_once(harness: Harness) -> None:
    lines = [chat_line(i, model="sim-slow", max_tokens=20) for i in range(400)]
    b = harness.submit(lines)
    harness.start_engine()
    harness.wait(b["id"], lambda x: x["request_counts"]["completed"] >= 5, timeout=15)
    asked = time.monotonic()
    assert harness.client.post(f"/v1/batches/{b['id']}/cancel").status_code == 200
    b = harness.wait_status(b["id"], "cancelled", timeout=10)
    assert time.monotonic() - asked < 5
    out, _ = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert len(out) < 400


def test_an_idle_feeder_sleeps(harness: Harness) -> None:
    engine = harness.start_engine()
    b = harness.submit([chat_line(i) for i in range(3)])
    harness.wait_status(b["id"], "completed", timeout=10)
    time.sleep(0.3)
    before = engine.feeder.passes
    time.sleep(1.5)
    # before the doorbell it looked at the database every 10 ms: ~150 passes here
    assert engine.feeder.passes - before <= 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness is per thread on Linux only")
def test_helper_threads_run_niced_and_the_loop_does_not(harness: Harness) -> None:
    engine = harness.start_engine()
    b = harness.submit([chat_line(i) for i in range(3)])
    harness.wait_status(b["id"], "completed", timeout=10)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    loop_thread = engine._thread
    assert loop_thread is not None and loop_thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, loop_thread.native_id) == base  # it feeds vLLM: never niced
    for thread in (engine.feeder, engine.writer):
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, base + harness.settings.helper_nice)
