"""The repository stays small: a submission over the workplace's size limits is refused whole.

Session 6's work never landed because something large (a venv made for a third-party client) was
committed. This test fails on any tracked file over 2 MiB and on a tracked tree over 16 MiB, so the
mistake shows in the README's test command, before a commit is pushed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE = 2 << 20
MAX_TOTAL = 16 << 20


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_large_tracked_file() -> None:
    sizes = {p: p.stat().st_size for p in _tracked() if p.is_file()}
    assert sizes, "git ls-files listed nothing"
    big = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_FILE}
    assert not big, f"tracked files over {MAX_FILE >> 20} MiB: {big}"
    assert sum(sizes.values()) < MAX_TOTAL


def test_venvs_are_ignored() -> None:
    for name in (".venv", ".venv-vllm", ".venv-compat", ".venv-curator"):
        r = subprocess.run(["git", "check-ignore", "-q", f"{name}/bin/python"], cwd=ROOT)
        assert r.returncode == 0, f"{name}/ is not ignored by .gitignore"
