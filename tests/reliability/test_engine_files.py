"""The engine's open files and damaged input files (#14, faults 1, 2 and the input half of 8).

Real `runner serve` processes with the simulated backend:
- open files: batches are created with the engine off, then the engine starts under a lowered
  RLIMIT_NOFILE with more batches waiting than that many descriptors would hold open (3 per batch
  before the fix); every batch ends (completed or cancelled) and the engine never restarts;
- damaged batches: an input file deleted, truncated, changed at the same size or grown ends its own
  batch as `failed` with a stable code (file_not_found / file_damaged) while the healthy batches
  complete, again with no engine restart; cancelling a damaged batch ends it as `cancelled`;
- a truncated input of a running batch is found when the feeder reads on, not at expiry;
- an input file gone from disk before validation fails the batch instead of retrying forever.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from .helpers import LiveServer, chat_line, jsonl, stop_server, upload, wait_batch

ENDED = ("completed", "failed", "expired", "cancelled")

SLOW_MODELS_YAML = """\
models:
  - id: sim-chat
    backend: simulated
    task: generate
    max_tokens: 8
  - id: sim-slow
    backend: simulated
    task: generate
    max_tokens: 8
    engine_args: {latency_per_line: 0.02, max_inflight: 4}
"""


@contextlib.contextmanager
def fd_limit(n: int) -> Iterator[None]:
    """Processes started inside inherit a soft RLIMIT_NOFILE of `n` (the server, then its engine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def create(client: httpx.Client, file_id: str) -> str:
    resp = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def upload_lines(client: httpx.Client, prefix: str, n: int, model: str = "sim-chat") -> str:
    resp = upload(client, jsonl([chat_line(f"{prefix}-{i}", model) for i in range(n)]))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        batches = {bid: client.get(f"/v1/batches/{bid}").json() for bid in ids}
        if all(b["status"] in ENDED for b in batches.values()):
            return batches
        if time.monotonic() > deadline:
            left = {bid: (b["status"], b["request_counts"]) for bid, b in batches.items() if b["status"] not in ENDED}
            raise AssertionError(f"{len(left)} batches not ended after {timeout}s: {list(left.items())[:5]}")
        time.sleep(0.2)


def restarts(server: LiveServer) -> int:
    return int(httpx.get(server.url + "/health", timeout=5).json()["engine"]["restarts"])


def rows(client: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    resp = client.get(f"/v1/files/{file_id}/content")
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]


def custom_ids(client: httpx.Client, batch: dict[str, Any]) -> list[str]:
    return [r["custom_id"] for r in rows(client, batch["output_file_id"]) + rows(client, batch["error_file_id"])]


def input_path(server: LiveServer, file_id: str) -> Path:
    return server.data_dir / "files" / file_id


def test_engine_open_files_stay_bounded_under_a_low_fd_limit(live_server: Any, tmp_path: Path) -> None:
    """150 waiting batches, 40 of them cancelled, and an engine allowed 256 descriptors."""
    data = tmp_path / "data"
    first = live_server(data_dir=data)
    with first.client() as c:
        fid = upload_lines(c, "fd", 2)
        ids = [create(c, fid) for _ in range(150)]
        for bid in ids:
            assert wait_batch(c, bid)["status"] == "in_progress"
        cancelled = ids[::4][:40]
        for bid in cancelled:
            assert c.post(f"/v1/batches/{bid}/cancel").json()["status"] == "cancelling"
    stop_server(first)
    with fd_limit(256):
        server = live_server(data_dir=data, engine=True)
    engine_pid = httpx.get(server.url + "/health", timeout=5).json()["engine"]["pid"]
    limits = Path(f"/proc/{engine_pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3] == "256" for line in limits.splitlines())
    with server.client() as c:
        batches = wait_all(c, ids, timeout=60)
        for bid, b in batches.items():
            assert b["status"] == ("cancelled" if bid in cancelled else "completed"), (bid, b["status"], b["errors"])
            assert sorted(custom_ids(c, b)) == ["fd-0", "fd-1"]
    assert restarts(server) == 0, server.log.read_text()[-3000:]


def test_damaged_inputs_fail_their_own_batches_only(live_server: Any, tmp_path: Path) -> None:
    """Inputs gone, truncated, changed and grown while the engine is down; one of the gone ones cancelled."""
    data = tmp_path / "data"
    first = live_server(data_dir=data)
    with first.client() as c:
        files = {name: upload_lines(c, name, 6) for name in ("gone", "cut", "changed", "grown", "gone2", "ok1", "ok2")}
        ids = {name: create(c, fid) for name, fid in files.items()}
        for bid in ids.values():
            assert wait_batch(c, bid)["status"] == "in_progress"
        assert c.post(f"/v1/batches/{ids['gone2']}/cancel").json()["status"] == "cancelling"
    stop_server(first)
    input_path(first, files["gone"]).unlink()
    input_path(first, files["gone2"]).unlink()
    cut = input_path(first, files["cut"])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    changed = input_path(first, files["changed"])
    raw = changed.read_bytes()
    changed.write_bytes(raw.replace(b'"custom_id":"changed-3"', b'"custom_jd":"changed-3"'))
    assert changed.stat().st_size == len(raw)
    grown = input_path(first, files["grown"])
    grown.write_bytes(grown.read_bytes() + jsonl([chat_line("grown-extra")]))

    server = live_server(data_dir=data, engine=True)
    with server.client() as c:
        batches = wait_all(c, list(ids.values()), timeout=30)
        by_name = {name: batches[bid] for name, bid in ids.items()}
        for name in ("ok1", "ok2"):
            b = by_name[name]
            assert b["status"] == "completed", b
            assert sorted(custom_ids(c, b)) == sorted(f"{name}-{i}" for i in range(6))
        expect = {"gone": "file_not_found", "cut": "file_damaged", "changed": "file_damaged", "grown": "file_damaged"}
        for name, code in expect.items():
            b = by_name[name]
            assert b["status"] == "failed", (name, b)
            errors = b["errors"]["data"]
            assert [e["code"] for e in errors] == [code], (name, errors)
            assert files[name] in errors[0]["message"] and errors[0]["param"] == "input_file_id"
            assert b["failed_at"] is not None and b["output_file_id"] is not None
            # rows written before the damage stay, each custom_id at most once
            seen = custom_ids(c, b)
            assert len(seen) == len(set(seen))
            assert b["request_counts"]["completed"] + b["request_counts"]["failed"] == len(seen)
        gone2 = by_name["gone2"]
        assert gone2["status"] == "cancelled", gone2
        assert [e["code"] for e in gone2["errors"]["data"]] == ["file_not_found"]
    assert restarts(server) == 0, server.log.read_text()[-3000:]


def test_input_truncated_while_running_fails_its_batch_at_once(live_server: Any) -> None:
    server = live_server(engine=True, models_yaml=SLOW_MODELS_YAML)
    with server.client() as c:
        # 3000 lines of ~600 bytes: more than any read-ahead buffer holds, so the cut is read
        lines = [chat_line(f"big-{i}", "sim-slow") for i in range(3000)]
        for line in lines:
            line["body"]["messages"][0]["content"] += " " + "x" * 500
        resp = upload(c, jsonl(lines))
        assert resp.status_code == 200, resp.text
        big = resp.json()["id"]
        bid = create(c, big)
        wait_batch(c, bid, until=("in_progress",))
        path = input_path(server, big)
        deadline = time.monotonic() + 20
        while c.get(f"/v1/batches/{bid}").json()["request_counts"]["completed"] < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 1000)
        cut_at = time.monotonic()
        small = create(c, upload_lines(c, "small", 3, model="sim-slow"))
        b = wait_batch(c, bid, until=ENDED, timeout=20)
        took = time.monotonic() - cut_at
        assert b["status"] == "failed", b
        assert [e["code"] for e in b["errors"]["data"]] == ["file_damaged"]
        assert took < 15, took
        seen = custom_ids(c, b)
        assert len(seen) == len(set(seen)) and len(seen) < 3000
        assert wait_batch(c, small, until=ENDED, timeout=20)["status"] == "completed"
    assert restarts(server) == 0


def test_input_gone_before_validation_fails_the_batch(live_server: Any) -> None:
    server = live_server()
    with server.client() as c:
        fid = upload_lines(c, "v", 2)
        input_path(server, fid).unlink()
        b = wait_batch(c, create(c, fid), timeout=10, until=ENDED)
        assert b["status"] == "failed", b
        assert [e["code"] for e in b["errors"]["data"]] == ["file_not_found"]
