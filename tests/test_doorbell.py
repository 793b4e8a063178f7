"""store/doorbell.py: a FIFO the API rings and the engine listens on, across processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

from runner.store.doorbell import Doorbell


def test_ringing_with_nobody_listening_is_harmless(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "engine.bell")
    bell.ring()  # no FIFO yet (ENOENT)
    assert not (tmp_path / "engine.bell").exists()
    heard = threading.Event()
    assert bell.listen(heard.set)
    bell.close()
    Doorbell(tmp_path / "engine.bell").ring()  # a FIFO with no reader (ENXIO)
    assert not heard.is_set()


def test_a_ring_from_another_process_wakes_the_listener(tmp_path: Path) -> None:
    path = tmp_path / "engine.bell"
    heard = threading.Event()
    bell = Doorbell(path)
    assert bell.listen(heard.set)
    try:
        assert stat.S_ISFIFO(os.stat(path).st_mode)
        assert not heard.wait(0.2)  # nothing rang
        code = ("from pathlib import Path; from runner.store.doorbell import Doorbell; "
                f"Doorbell(Path({str(path)!r})).ring()")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
        assert heard.wait(5)
        heard.clear()
        for _ in range(100_000):  # more rings than the pipe holds: the extra ones are dropped, never block
            bell.ring()
        assert heard.wait(5)
    finally:
        bell.close()
    assert bell._thread is not None and not bell._thread.is_alive()


def test_a_stray_file_where_the_bell_goes_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "engine.bell"
    path.write_text("not a pipe")
    heard = threading.Event()
    bell = Doorbell(path)
    assert bell.listen(heard.set)
    try:
        assert stat.S_ISFIFO(os.stat(path).st_mode)
        Doorbell(path).ring()
        assert heard.wait(5)
    finally:
        bell.close()
