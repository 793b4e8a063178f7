"""Shared benchmark plumbing: a real `runner serve` subprocess, peak RSS, result files, tables."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

RESULTS = Path(__file__).resolve().parent / "results"

# A simulated model at full speed: every second measured with it is runner's own.
SIM_MODELS_YAML = """models:
  - id: sim
    backend: simulated
    task: generate
    max_tokens: 16
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Server:
    """`python -m runner serve` on a free loopback port, killed (with its engine) on exit."""

    def __init__(self, data_dir: Path, models: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")
        full_env = dict(os.environ, RUNNER_RATE_LIMIT="0", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
             "--models", str(models), *(args or [])],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
            cwd=cwd,  # another checkout of runner (bench_idle.py's baseline); None: this one
        )

    def wait_ready(self, timeout: float = 60.0, engine: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.base + "/health", timeout=1)
                if r.status_code == 200 and (not engine or (r.json().get("engine") or {}).get("alive")):
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.log.name}")

    def engine_pid(self) -> int | None:
        try:
            engine = httpx.get(self.base + "/health", timeout=2).json().get("engine") or {}
            pid = engine.get("pid")
            return int(pid) if pid else None
        except httpx.HTTPError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants, now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (gone ones left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[p] = (int(fields[11]) + int(fields[12])) / tick
    return out


def process_name(pid: int) -> str:
    """The start of its command line ("VLLM::Worker", "python -m runner engine ...")."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    path = RESULTS / f"{name}-{stamp}.json"
    data = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **data}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)
