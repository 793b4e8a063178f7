"""The real `runner serve` (API + engine child) with `backend: vllm` on a tiny Llama (CUDA or CPU).

Skipped where vLLM does not import. Each test starts its own server process (a fresh engine process
with it) and stops it at the end. Checks the exactly-once invariant: every custom_id appears once
across the output and error files, also after a cancel and after a crash and restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from vllm_helpers import (
    DEVICE,
    REPO,
    TINY_ENGINE_ARGS,
    child_env,
    descendants,
    engine_args_yaml,
    make_tiny_llama,
    skip_unless_vllm,
)

skip_unless_vllm()
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

KEY = "sk-vllm-test"
LOAD_TIMEOUT = 420.0
# The CPU runs a few hundred tokens/s: smaller batches there, the same checks.
SCALE = 0.25 if DEVICE == "cpu" else 1.0


def _n(full: int) -> int:
    return max(8, int(full * SCALE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _models_yaml(tiny: Path) -> str:
    args = engine_args_yaml(TINY_ENGINE_ARGS)
    emb_args = args.replace("gpu_memory_utilization: 0.25", "gpu_memory_utilization: 0.1")
    return f"""
models:
  - id: tiny-chat
    backend: vllm
    task: generate
    path: {tiny}
    max_tokens: 16
    engine_args:
{args}
  - id: tiny-embed
    backend: vllm
    task: embed
    path: {tiny}
    engine_args:
      convert: embed
{emb_args}
"""


class Server:
    """`python -m runner serve` in its own process group (so a crash test can kill it all)."""

    def __init__(self, tmp: Path, tiny: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "models.yaml").write_text(_models_yaml(tiny), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        env = child_env()
        env["RUNNER_API_KEYS"] = KEY
        env["RUNNER_CHECKPOINT_INTERVAL"] = "0.2"
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--port", str(self.port), "--data-dir",
             str(self.tmp / "data"), "--models", str(self.tmp / "models.yaml")],
            env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError("server did not start:\n" + self.log_tail())

    def kill(self) -> None:
        """SIGKILL the whole process group: API, engine and vLLM's EngineCore."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.client.close()

    def log_tail(self) -> str:
        return (self.tmp / "server.log").read_text(errors="replace")[-6000:]

    # -- batch API --------------------------------------------------------------------------

    def submit(self, rows: list[dict[str, Any]], endpoint: str) -> str:
        content = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
        f = self.client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
        assert f.status_code == 200, f.text
        b = self.client.post(
            "/v1/batches",
            json={"input_file_id": f.json()["id"], "endpoint": endpoint, "completion_window": "24h"},
        )
        assert b.status_code == 200, b.text
        return str(b.json()["id"])

    def batch(self, batch_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/batches/{batch_id}").json())

    def wait(self, batch_id: str, statuses: tuple[str, ...], timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self.batch(batch_id)
            if b["status"] in statuses:
                return b
            time.sleep(0.5)
        raise AssertionError(f"batch {batch_id} never reached {statuses}: {self.batch(batch_id)}\n{self.log_tail()}")

    def rows(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        r = self.client.get(f"/v1/files/{file_id}/content")
        assert r.status_code == 200, r.text
        return [orjson.loads(x) for x in r.content.splitlines() if x.strip()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    tiny = make_tiny_llama(tmp_path / "tiny-llama")
    srv = Server(tmp_path, tiny)
    yield srv
    srv.stop()


def _chat(i: int, **body: Any) -> dict[str, Any]:
    payload = {"model": "tiny-chat", "messages": [{"role": "user", "content": f"Hello {i}"}], **body}
    return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": payload}


def _assert_exactly_once(rows: list[dict[str, Any]], n: int) -> None:
    ids = [r["custom_id"] for r in rows]
    assert sorted(ids) == sorted(f"c{i}" for i in range(n)), f"{len(ids)} rows for {n} lines"


def test_chat_completions_embeddings_end_to_end(server: Server) -> None:
    chat = [_chat(i, max_tokens=4, ignore_eos=True, n=2) for i in range(6)]
    chat.append(_chat(6, n="bad"))  # a bad body: one 400 row, the batch goes on
    cid = server.submit(chat, "/v1/chat/completions")
    comp = [
        {"custom_id": "p0", "method": "POST", "url": "/v1/completions",
         "body": {"model": "tiny-chat", "prompt": [[5, 6, 7], [8, 9]], "max_tokens": 3, "ignore_eos": True}},
        {"custom_id": "p1", "method": "POST", "url": "/v1/completions",
         "body": {"model": "tiny-chat", "prompt": "Hello", "max_tokens": 3, "ignore_eos": True}},
    ]  # fmt: skip
    pid = server.submit(comp, "/v1/completions")
    emb = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "tiny-embed", "input": ["Hello", "world"]}}
        for i in range(3)
    ]  # fmt: skip
    eid = server.submit(emb, "/v1/embeddings")

    b = server.wait(cid, ("completed", "failed"))
    assert b["status"] == "completed" and b["request_counts"] == {"total": 7, "completed": 6, "failed": 1}
    out = server.rows(b["output_file_id"])
    err = server.rows(b.get("error_file_id"))
    _assert_exactly_once(out + err, 7)
    for row in out:
        body = row["response"]["body"]
        assert row["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert [c["index"] for c in body["choices"]] == [0, 1] and body["usage"]["completion_tokens"] == 8

    b = server.wait(pid, ("completed", "failed"))
    (p0, p1) = sorted(server.rows(b["output_file_id"]), key=lambda r: r["custom_id"])
    assert [c["index"] for c in p0["response"]["body"]["choices"]] == [0, 1]
    assert p0["response"]["body"]["usage"]["prompt_tokens"] == 5
    assert p1["response"]["body"]["object"] == "text_completion"

    b = server.wait(eid, ("completed", "failed"))
    assert b["status"] == "completed", b
    for row in server.rows(b["output_file_id"]):
        body = row["response"]["body"]
        assert body["object"] == "list" and len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 256
    # one generation and one embedding model, resident side by side (one slot per task)
    models = server.client.get("/health").json()["models"]
    assert {m: v["state"] for m, v in models.items()} == {"tiny-chat": "loaded", "tiny-embed": "loaded"}


def test_cancel_mid_run_writes_every_line_once(server: Server) -> None:
    n = _n(400)
    # vLLM runs every line side by side, so lines of one length all finish in the same step and the
    # batch could complete before the cancel lands (CI saw that: 409). A few short lines finish
    # first; the rest are long enough that the cancel always catches them in flight.
    lines = [_chat(i, max_tokens=4 if i < 4 else 400, ignore_eos=True) for i in range(n)]
    cid = server.submit(lines, "/v1/chat/completions")
    deadline = time.monotonic() + LOAD_TIMEOUT
    while server.batch(cid)["request_counts"]["completed"] == 0:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    r = server.client.post(f"/v1/batches/{cid}/cancel")
    assert r.status_code == 200, (r.json(), server.batch(cid)["request_counts"])
    b = server.wait(cid, ("cancelled",), timeout=120)
    out, err = server.rows(b["output_file_id"]), server.rows(b.get("error_file_id"))
    _assert_exactly_once(out + err, n)
    assert err and all(r["error"]["code"] == "batch_cancelled" for r in err)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _running_batch(server: Server, n: int, max_tokens: int) -> str:
    """A batch of n long chat lines, returned once 5 of them are written (so it is mid-run)."""
    cid = server.submit([_chat(i, max_tokens=max_tokens, ignore_eos=True) for i in range(n)], "/v1/chat/completions")
    deadline = time.monotonic() + LOAD_TIMEOUT
    while server.batch(cid)["request_counts"]["completed"] < 5:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)
    return cid


def test_engine_kill_leaves_no_vllm_process_and_finishes_exactly_once(server: Server) -> None:
    """kill -9 of the engine alone, mid-run: its EngineCore (and any worker) dies with it, the
    supervisor starts a new engine, and the batch finishes with every line exactly once (#12)."""
    n = _n(200)
    cid = _running_batch(server, n, _n(64))
    engine = server.client.get("/health").json()["engine"]["pid"]
    children = descendants(engine)
    assert children, "vLLM runs its EngineCore in a child process of the engine"
    os.kill(engine, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in children):
        assert time.monotonic() < deadline, f"vLLM processes outlived the engine: {[p for p in children if _alive(p)]}"
        time.sleep(0.1)
    b = server.wait(cid, ("completed", "failed"))
    assert b["status"] == "completed", b
    _assert_exactly_once(server.rows(b["output_file_id"]) + server.rows(b.get("error_file_id")), n)
    assert server.client.get("/health").json()["engine"]["restarts"] >= 1


def test_crash_and_resume_keeps_exactly_once(server: Server) -> None:
    n = _n(300)
    cid = _running_batch(server, n, _n(128))
    # mid-run, no warning: the API's group dies; the kernel kills the engine (PDEATHSIG) and the
    # engine's reaper its EngineCore
    server.kill()
    server.start()
    b = server.wait(cid, ("completed", "failed"))
    assert b["status"] == "completed", b
    _assert_exactly_once(server.rows(b["output_file_id"]) + server.rows(b.get("error_file_id")), n)
