"""Fixtures for the reliability suites (helpers live in helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import LiveServer, start_server, stop_server


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(**kw: Any) -> LiveServer:
        server = start_server(tmp_path / f"srv{len(started)}", **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_server(server)
