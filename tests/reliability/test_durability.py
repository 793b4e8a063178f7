"""Acknowledged writes are durable before their 2xx goes out (issue #14, fault 9).

SQLite in WAL mode with synchronous=NORMAL does not fsync the WAL at commit: a power cut after the
200 could roll an upload, a create or a cancel back (9 of 30 in a simulation), and leave an upload's
file with no row. With synchronous=FULL each commit fsyncs the WAL before it returns.

A power cut cannot be simulated here, so the test watches what the kernel is asked to do instead:
`strace` on a real `runner serve` records the fsyncs, renames and socket writes of the API
process; for an upload, a batch create and a cancel, the WAL is fsynced after the request arrives
and before its `HTTP/1.1 200` is written, and an upload's bytes are fsynced, renamed into place and
the directory fsynced before the row is committed. Before the fix no WAL fsync came before any
200. A second test reads PRAGMA synchronous on every connection the store opens (a thread's own
connection included).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.store.db import Database

from .helpers import LiveServer, chat_line, jsonl, upload


def test_every_store_connection_is_synchronous_full(tmp_path: Path) -> None:
    db = Database(tmp_path / "runner.db")
    seen = [int(db.connection().execute("PRAGMA synchronous").fetchone()[0])]
    t = threading.Thread(target=lambda: seen.append(int(db.connection().execute("PRAGMA synchronous")
                                                        .fetchone()[0])))
    t.start()
    t.join()
    db.close()
    assert seen == [2, 2]  # 2 = FULL (1 = NORMAL: the WAL is not fsynced at commit)


SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)$")


def _events(trace: str) -> list[tuple[str, str]]:
    out = []
    for line in trace.splitlines():
        m = SYSCALL.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_upload_create_and_cancel_are_fsynced_before_their_200(live_server: Callable[..., LiveServer],
                                                                tmp_path: Path) -> None:
    server = live_server()
    trace_path = tmp_path / "strace.txt"
    strace = subprocess.Popen(
        ["strace", "-f", "-y", "-s", "48", "-o", str(trace_path), "-p", str(server.proc.pid),
         "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,sendto,write,writev,sendmsg"],
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not trace_path.exists() or not trace_path.stat().st_size:
            if strace.poll() is not None:
                pytest.skip(f"strace cannot attach here: {strace.stderr.read().decode()[:300]}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            with server.client() as c:
                c.get("/health")  # something to trace, so the file shows strace is attached
            time.sleep(0.1)
        with server.client() as c:
            c.get("/health")
            up = upload(c, jsonl([chat_line("a")]))
            assert up.status_code == 200, up.text
            file_id = up.json()["id"]
            created = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                  "completion_window": "24h"})
            assert created.status_code == 200, created.text
            cancelled = c.post(f"/v1/batches/{created.json()['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
        time.sleep(0.3)
    finally:
        strace.send_signal(signal.SIGINT)
        strace.wait(10)
    events = _events(trace_path.read_text())
    # Split the trace at each 200 written to a socket: the last three are the upload, create, cancel.
    answers = [i for i, (name, args) in enumerate(events) if name in ("sendto", "write", "writev", "sendmsg")
               and "HTTP/1.1 200" in args]
    assert len(answers) >= 4, events[-40:]
    upload_at, create_at, cancel_at = answers[-3:]
    for lo, hi, what in ((answers[-4], upload_at, "upload"), (upload_at, create_at, "create"),
                         (create_at, cancel_at, "cancel")):
        wal = [i for i in range(lo, hi) if events[i][0] in ("fsync", "fdatasync") and "runner.db-wal>" in events[i][1]]
        assert wal, f"the {what}'s commit was not fsynced before its 200: {events[lo:hi]}"
    # The upload: its bytes, the rename, the directory, then the row (the WAL), then the 200.
    span = events[answers[-4]:upload_at]

    def first(pred: Callable[[str, str], bool]) -> int:
        return next(i for i, (name, args) in enumerate(span) if pred(name, args))

    data = first(lambda n, a: n in ("fsync", "fdatasync") and "/.tmp/upload-" in a)
    moved = first(lambda n, a: n.startswith("rename") and f"/files/{file_id}" in a)
    folder = first(lambda n, a: n in ("fsync", "fdatasync") and re.search(r"/files>\)", a) is not None)
    row = max(i for i, (n, a) in enumerate(span) if n in ("fsync", "fdatasync") and "runner.db-wal>" in a)
    assert data < moved < folder < row, span
