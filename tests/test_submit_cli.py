"""`runner submit` / `status` / `cancel` as a user runs them: `python -m runner ...` subprocesses
against a real `runner serve` (engine on, simulated backend) that has API keys set.

The Ctrl-C test runs submit --wait in a pseudo-terminal (python's pty module), sends it SIGINT,
answers the question with "y", and checks the batch ends cancelled with every line accounted for.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.submit import progress_text
from tests.reliability.helpers import LiveServer, free_port, start_server, stop_server

MODELS = """\
models:
  - id: sim-chat
    backend: simulated
    task: generate
    max_tokens: 16
  - id: sim-slow
    backend: simulated
    task: generate
    max_tokens: 16
    engine_args: {tokens_per_second: 40, max_inflight: 4}
"""
KEY, OTHER_KEY = "sk-submit-one", "sk-submit-two"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("submit"), engine=True, models_yaml=MODELS,
                       env={"RUNNER_API_KEYS": f"{KEY},{OTHER_KEY}", "RUNNER_MAX_UPLOAD_BYTES": "200000"})
    yield srv
    stop_server(srv)


def client_env(server: LiveServer | None = None, key: str | None = KEY, **extra: str) -> dict[str, str]:
    """The user's shell: no RUNNER_* from the test run, OPENAI_BASE_URL/OPENAI_API_KEY as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "OPENAI_"))}
    if server is not None:
        env["OPENAI_BASE_URL"] = server.url + "/v1"
    if key is not None:
        env["OPENAI_API_KEY"] = key
    env.update(extra)
    return env


def runner(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def batch_file(path: Path, n: int, model: str = "sim-chat", bad_every: int = 0) -> list[str]:
    """n chat lines; every bad_every-th carries a parameter the simulated backend refuses, so it
    becomes a row of the error file."""
    ids = [f"req-{i}" for i in range(n)]
    rows = []
    for i, cid in enumerate(ids):
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}
        if bad_every and i % bad_every == 1:
            body["stop_token_ids"] = [1]
        rows.append({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ids


def custom_ids(*paths: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for p in paths if p.exists() for line in p.read_text().splitlines()]


def get_batch(server: LiveServer, batch_id: str, key: str = KEY) -> dict[str, Any]:
    with server.client(headers={"authorization": f"Bearer {key}"}) as c:
        resp = c.get(f"/v1/batches/{batch_id}")
        assert resp.status_code == 200, resp.text
        batch: dict[str, Any] = resp.json()
        return batch


def test_submit_wait_writes_both_files_with_progress(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = batch_file(src, 40, bad_every=9)
    out, err = tmp_path / "got.jsonl", tmp_path / "errs.jsonl"
    res = runner("submit", str(src), "--wait", "-o", str(out), "--errors", str(err), "--poll-interval", "0.1",
                 "--progress-interval", "0.1", "--metadata", "team=nlp", env=client_env(server))
    assert res.returncode == 0, res.stderr
    batch_id = res.stdout.strip()
    assert batch_id.startswith("batch_") and "\n" not in batch_id  # stdout is the id alone, for scripts
    assert f"progress: {batch_id}" in res.stderr and "lines" in res.stderr
    assert f"{batch_id} completed" in res.stderr
    got_out, got_err = custom_ids(out), custom_ids(err)
    assert len(got_err) == 5  # req-1, 10, 19, 28, 37
    assert sorted(got_out + got_err) == sorted(ids)  # each custom_id exactly once across both
    assert not list(tmp_path.glob("*.part"))
    batch = get_batch(server, batch_id)
    assert batch["status"] == "completed" and batch["metadata"] == {"team": "nlp"}
    assert batch["endpoint"] == "/v1/chat/completions"  # taken from the file's first line


def test_default_paths_and_empty_error_file(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "jobs.jsonl"
    ids = batch_file(src, 5)
    stale = tmp_path / "jobs.errors.jsonl"
    stale.write_text('{"custom_id": "from-an-old-run"}\n')
    res = runner("submit", str(src), "--wait", "--poll-interval", "0.1", env=client_env(server))
    assert res.returncode == 0, res.stderr
    assert sorted(custom_ids(tmp_path / "jobs.output.jsonl")) == sorted(ids)
    assert stale.read_text() == ""  # no line failed: the error file is this run's, empty


def test_failed_validation_exits_1_with_the_code(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    batch_file(src, 3)
    with open(src, "a") as f:
        f.write("{not json\n")
    res = runner("submit", str(src), "--wait", "--poll-interval", "0.1", env=client_env(server))
    assert res.returncode == 1, res.stderr
    assert "failed" in res.stderr and "line 4: invalid_json" in res.stderr


def test_server_error_is_one_line_exit_2(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    batch_file(src, 2)
    res = runner("submit", str(src), "--endpoint", "/v1/images/generations", env=client_env(server))
    assert res.returncode == 2
    assert res.stderr.startswith("runner: error: HTTP 400 invalid_endpoint: ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr


def test_refused_upload_is_answered_not_a_broken_pipe(server: LiveServer, tmp_path: Path) -> None:
    """The server refuses these before reading the body; Expect: 100-continue lets the client hear
    why instead of writing into a closed connection."""
    big = tmp_path / "big.jsonl"
    batch_file(big, 2500)  # ~300 KB, over this server's RUNNER_MAX_UPLOAD_BYTES
    assert big.stat().st_size > 200_000
    res = runner("submit", str(big), env=client_env(server))
    assert res.returncode == 2
    assert res.stderr.startswith("runner: error: HTTP 413 file_too_large: "), res.stderr
    small = tmp_path / "small.jsonl"
    batch_file(small, 1)
    res = runner("submit", str(small), env=client_env(server))
    assert res.returncode == 0, res.stderr


def test_keys_wrong_missing_and_from_runner_setting(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    batch_file(src, 2)
    wrong = runner("submit", str(src), env=client_env(server, key="sk-wrong"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "runner: error: HTTP 401 invalid_api_key: Incorrect API key provided."
    missing = runner("status", env=client_env(server, key=None))
    assert missing.returncode == 2 and "HTTP 401 missing_api_key" in missing.stderr
    # No OPENAI_API_KEY: the first of RUNNER_API_KEYS is the key (runner's own setting).
    res = runner("submit", str(src), "--wait", "--poll-interval", "0.1",
                 env=client_env(server, key=None, RUNNER_API_KEYS=OTHER_KEY))
    assert res.returncode == 0, res.stderr
    batch_id = res.stdout.strip()
    assert get_batch(server, batch_id, key=OTHER_KEY)["status"] == "completed"
    # --api-key wins over OPENAI_API_KEY; the other key's owner does not see the batch.
    assert batch_id in runner("status", "--api-key", OTHER_KEY, env=client_env(server, key="sk-wrong")).stdout
    assert batch_id not in runner("status", "--limit", "100", env=client_env(server)).stdout


def test_connection_refused_is_clear(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    batch_file(src, 1)
    port = free_port()
    res = runner("submit", str(src), "--base-url", f"http://127.0.0.1:{port}", env=client_env())
    assert res.returncode == 2
    assert f"cannot reach http://127.0.0.1:{port}/v1 (connection refused)" in res.stderr
    assert "Traceback" not in res.stderr


def test_status_lists_and_shows(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    batch_file(src, 4, bad_every=3)
    res = runner("submit", str(src), "--wait", "--poll-interval", "0.1", env=client_env(server))
    assert res.returncode == 0, res.stderr
    batch_id = res.stdout.strip()
    table = runner("status", env=client_env(server))
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("ID ")
    row = next(line for line in table.stdout.splitlines() if line.startswith(batch_id))
    assert row.split()[1:4] == ["completed", "4/4", "1"] and row.split()[-1] == "sim-chat"
    one = runner("status", batch_id, env=client_env(server))
    assert one.returncode == 0, one.stderr
    assert f"id:             {batch_id}" in one.stdout
    assert "lines:          4/4 done, 3 completed, 1 failed" in one.stdout
    assert "throughput:" in one.stdout
    as_json = json.loads(runner("status", batch_id, "--json", env=client_env(server)).stdout)
    assert as_json["id"] == batch_id and as_json["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    listing = json.loads(runner("status", "--json", env=client_env(server)).stdout)
    assert batch_id in [b["id"] for b in listing["data"]]
    gone = runner("status", "batch_doesnotexist", env=client_env(server))
    assert gone.returncode == 2 and "HTTP 404 not_found" in gone.stderr


def _read_until(fd: int, needle: str, seen: list[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in "".join(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in {''.join(seen)[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode(errors="replace"))
            except OSError:  # EIO: the child closed the terminal
                raise AssertionError(f"{needle!r} not seen before exit: {''.join(seen)[-2000:]!r}") from None


def test_ctrl_c_on_a_terminal_asks_and_cancels(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "slow.jsonl"
    ids = batch_file(src, 30, model="sim-slow")  # 480 tokens at 40 tok/s: ~12 s, cancelled long before
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "submit", str(src), "--wait", "-o", str(out),
                             "--errors", str(err), "--poll-interval", "0.1"],
                            stdin=slave, stdout=slave, stderr=slave, env=client_env(server))
    os.close(slave)
    seen: list[str] = []
    try:
        _read_until(master, "in_progress", seen)
        assert "\r" in "".join(seen) and "\x1b[K" in "".join(seen)  # redrawn in place on a terminal
        proc.send_signal(signal.SIGINT)
        _read_until(master, "? [y/N]", seen)
        text = "".join(seen)
        batch_id = text[text.index("Cancel batch ") + 13:].split("?")[0]
        os.write(master, b"y\n")
        _read_until(master, "cancelled:", seen)
        assert proc.wait(timeout=15) == 4  # EXIT_CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    batch = get_batch(server, batch_id)
    assert batch["status"] == "cancelled"
    assert batch["request_counts"]["completed"] < 30
    assert sorted(custom_ids(out, err)) == sorted(ids)  # what ran, and a batch_cancelled row for the rest
    assert "batch_cancelled" in err.read_text()


def test_ctrl_c_without_a_terminal_leaves_the_batch_running(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "slow.jsonl"
    batch_file(src, 30, model="sim-slow")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "submit", str(src), "--wait", "--poll-interval", "0.1",
                             "--progress-interval", "0.1"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=client_env(server))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        batch_id = proc.stdout.readline().strip()
        # The server's measured throughput (the Batch's `throughput` field) reaches the line:
        # "... in_progress 8/30 lines (27%), failed 0, 38.5 tok/s, ETA 6s, elapsed 2s".
        deadline = time.monotonic() + 10
        while not re.search(r"in_progress .* \d+\.\d tok/s, ETA \d+", line := proc.stderr.readline()):
            assert time.monotonic() < deadline and line, "no progress line with tok/s and an ETA"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        tail = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"cancel it with `runner cancel {batch_id}`" in tail
    assert get_batch(server, batch_id)["status"] == "in_progress"
    res = runner("cancel", batch_id, env=client_env(server))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [batch_id, "cancelling"] or res.stdout.split() == [batch_id, "cancelled"]


def test_progress_text_shows_throughput_or_dashes() -> None:
    batch: dict[str, Any] = {"id": "batch_x", "status": "in_progress", "throughput": None,
                             "request_counts": {"total": 200, "completed": 45, "failed": 5}}
    assert progress_text(batch, 42) == ("batch_x in_progress 50/200 lines (25%), failed 5, - tok/s, ETA -, "
                                        "elapsed 42s")
    batch["throughput"] = {"lines_per_second": 2.5, "output_tokens_per_second": 812.34, "eta_seconds": 61}
    text = progress_text(batch, 3725, bar_width=10)
    assert "[##........] 50/200 lines (25%)" in text and "812.3 tok/s, ETA 1m01s, elapsed 1h02m" in text


class CuttingProxy:
    """A TCP proxy in front of the server that cuts the first file download after `cut` bytes of
    its answer (a dropped connection), and records each request's first line and Range header."""

    def __init__(self, target_port: int, cut: int) -> None:
        self.target_port = target_port
        self.cut = cut
        self.cut_done = False
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        first = client.recv(65536)
        head = first.split(b"\r\n\r\n")[0].decode("latin-1").lower().splitlines()
        rng = next((h for h in head if h.startswith("range:")), "")
        self.requests.append(f"{head[0]} {rng}".strip())
        limit = None
        if "/content" in head[0] and not self.cut_done:
            self.cut_done, limit = True, self.cut
        upstream.sendall(first)
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        self._pipe(upstream, client, limit)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.sock.close()


def test_download_resumes_with_range_after_a_dropped_connection(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = batch_file(src, 60)
    proxy = CuttingProxy(int(server.url.rsplit(":", 1)[1]), cut=5000)
    try:
        out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
        res = runner("submit", str(src), "--wait", "-o", str(out), "--errors", str(err), "--poll-interval", "0.1",
                     env=client_env(key=KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{proxy.port}/v1"))
    finally:
        proxy.close()
    assert res.returncode == 0, res.stderr
    assert proxy.cut_done
    resumed = [r for r in proxy.requests if "/content" in r and "range: bytes=" in r]
    assert len(resumed) == 1, proxy.requests  # the cut download went on from where it stopped
    batch = get_batch(server, res.stdout.strip())
    with server.client(headers={"authorization": f"Bearer {KEY}"}) as c:
        whole = c.get(f"/v1/files/{batch['output_file_id']}/content").content
    assert out.read_bytes() == whole  # byte for byte what the server holds, nothing twice
    assert sorted(custom_ids(out, err)) == sorted(ids)
