"""The API's HTTP server is quiet when idle and still stops at once (api/http_server.py, #16).

uvicorn's own loop wakes ten times a second; on a small CPU box every wakeup stalls vLLM's spinning
OpenMP workers, and an idle team server should cost nothing. Real `runner serve` processes.
"""

from __future__ import annotations

import email.utils
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import LiveServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def wakeups(pid: int) -> int:
    """Times the process's main thread went to sleep and woke up (voluntary context switches)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])


def test_an_idle_api_wakes_about_once_a_second_and_keeps_its_date_header(
        live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    first = httpx.get(server.url + "/health")
    time.sleep(1.0)  # settle: the start-up work is done
    before = wakeups(server.proc.pid)
    time.sleep(4.0)
    woke = wakeups(server.proc.pid) - before
    # uvicorn's own loop alone wakes 40 times in 4 s; this one ticks once a second, and the webhook
    # deliverer looks for work once a second: 6-9 wakeups measured here
    assert woke <= 20, f"the idle API's main thread woke {woke} times in 4 s"
    # the Date header is still refreshed every second
    second = httpx.get(server.url + "/health")
    d1 = email.utils.parsedate_to_datetime(first.headers["date"]).timestamp()
    d2 = email.utils.parsedate_to_datetime(second.headers["date"]).timestamp()
    assert 4 <= d2 - d1 <= 8, (first.headers["date"], second.headers["date"])
    assert abs(d2 - time.time()) < 3


def test_sigterm_stops_an_idle_api_at_once(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    time.sleep(0.3)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=10)
    took = time.monotonic() - t0
    assert server.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
    # waiting for the next one-second tick would take up to a second; the signal wakes the loop
    assert took < 0.6, f"stopped {took:.2f} s after SIGTERM"
