"""Completion windows, per-key enqueued caps and the deadline check (#16), through the official openai
client against a real `runner serve` (tests/engine/test_server.Server), on the simulated backend."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine.test_server import Server
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.errors import ConfigError
from runner.input_tokens import estimate
from runner.model_specs import parse_model_specs
from runner.settings import Settings, load_settings
from runner.store import BatchStore, Database, FileStore, ModelStates

openai = pytest.importorskip("openai")

KEY_A, KEY_B = "sk-quota-a", "sk-quota-b"
# sim-slow answers 4 tokens a line at 40 tokens/s: 10 lines/s. sim-hold holds a batch for seconds.
MODELS_YAML = """
models:
  - id: sim-chat
    backend: simulated
    max_tokens: 16
  - id: sim-slow
    backend: simulated
    max_tokens: 4
    engine_args: {tokens_per_second: 40, max_inflight: 8}
  - id: sim-hold
    backend: simulated
    max_tokens: 4
    engine_args: {tokens_per_second: 1, max_inflight: 4}
"""


def _file(client: Any, n: int, model: str = "sim-chat", content: str = "q", start: int = 0) -> str:
    lines = [{"custom_id": f"r-{start + i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "user", "content": content}]}} for i in range(n)]
    f = io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    f.name = "in.jsonl"
    return str(client.files.create(file=f, purpose="batch").id)


def _create(client: Any, file_id: str, window: str = "24h") -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window)


def _wait(client: Any, batch_id: str, *statuses: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status} {b.request_counts}"
        time.sleep(0.05)


def _only_error(b: Any) -> Any:
    assert b.errors is not None and len(b.errors.data) == 1, b.errors
    e = b.errors.data[0]
    assert e.line is None
    return e


# -- completion windows ----------------------------------------------------------------------------------

def test_a_listed_window_is_accepted_and_sets_expires_at(tmp_path: Path) -> None:
    s = Server(tmp_path, MODELS_YAML, env={"RUNNER_COMPLETION_WINDOWS": "1h,30m"}, keys=(KEY_A,))
    try:
        c = s.client
        fid = _file(c, 3)
        b = _create(c, fid, "1h")  # the SDK types it Literal["24h"], and sends any string
        assert b.completion_window == "1h"
        assert b.expires_at == b.created_at + 3600
        assert _create(c, fid, "30m").expires_at - b.created_at in (1800, 1801)
        assert _create(c, fid).expires_at - b.created_at in (86_400, 86_401)  # "24h" always
        done = _wait(c, b.id, "completed")
        assert done.request_counts.completed == 3 and done.errors is None
        with pytest.raises(openai.BadRequestError) as exc:
            _create(c, fid, "4h")
        err = exc.value.body
        assert err["code"] == "invalid_completion_window" and err["param"] == "completion_window"
        assert "'24h', '1h', '30m'" in err["message"]
    finally:
        s.stop()


def test_a_window_is_refused_unless_listed(tmp_path: Path) -> None:
    registry = parse_model_specs({"models": [{"id": "sim-chat", "backend": "simulated"}]})
    app = create_app(Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0), registry)
    with TestClient(app) as tc:
        c = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=tc, max_retries=0)
        fid = _file(c, 1)
        with pytest.raises(openai.BadRequestError) as exc:
            _create(c, fid, "1h")
        assert exc.value.body["code"] == "invalid_completion_window"
        assert exc.value.body["message"] == "'completion_window' must be one of '24h'."
        assert _create(c, fid).completion_window == "24h"


def test_window_settings_are_checked_at_startup() -> None:
    assert load_settings(environ={"RUNNER_COMPLETION_WINDOWS": "1h, 4h,1h"}).accepted_windows == ("24h", "1h", "4h")
    for bad in ("1d", "90s", "01h", "h", "1.5h", "48h"):
        with pytest.raises(ConfigError, match="RUNNER_COMPLETION_WINDOWS"):
            load_settings(environ={"RUNNER_COMPLETION_WINDOWS": bad})
    with pytest.raises(ConfigError, match="RUNNER_DEADLINE_POLICY"):
        load_settings(environ={"RUNNER_DEADLINE_POLICY": "warn"})


def test_key_limits_format_and_no_key_in_messages() -> None:
    limits = "sk-a=lines:10,tokens:500; sk-b=tokens:0"
    s = load_settings(environ={"RUNNER_API_KEYS": "sk-a,sk-b", "RUNNER_KEY_LIMITS": limits})
    assert s.key_limits == (("sk-a", 10, 500), ("sk-b", None, 0))
    for bad in ("sk-a", "sk-a=lines", "sk-a=lines:x", "sk-a=rows:1", "sk-a=lines:1,lines:2", "=lines:1"):
        with pytest.raises(ConfigError) as exc:
            load_settings(environ={"RUNNER_API_KEYS": "sk-a", "RUNNER_KEY_LIMITS": bad})
        assert "sk-a" not in str(exc.value)  # a key is a secret: never in a message
    with pytest.raises(ConfigError, match="not one of RUNNER_API_KEYS") as exc:
        load_settings(environ={"RUNNER_API_KEYS": "sk-a", "RUNNER_KEY_LIMITS": "sk-typo=lines:1"})
    assert "sk-typo" not in str(exc.value)


# -- enqueued caps ---------------------------------------------------------------------------------------

def test_estimated_tokens() -> None:
    image = {"type": "image_url", "image_url": {"url": "x" * 999}}
    chat = {"model": "m", "messages": [{"role": "user", "content": "12345678"}, {"role": "user", "content": [image]}]}
    assert estimate(chat) == 7  # "user" "12345678" "user" "image_url" (the type): 25 bytes / 4, rounded up; no url
    assert estimate({"model": "m", "prompt": [1, 2, 3]}) == 3  # token ids count exactly
    assert estimate({"model": "m", "input": "é" * 4, "instructions": "abcd"}) == 3  # UTF-8 bytes


def test_enqueued_caps_per_key_and_release(tmp_path: Path) -> None:
    env = {"RUNNER_MAX_ENQUEUED_LINES": "6", "RUNNER_KEY_LIMITS": f"{KEY_B}=lines:0,tokens:30"}
    s = Server(tmp_path, MODELS_YAML, env=env, keys=(KEY_A, KEY_B))
    try:
        a = s.client
        b = openai.OpenAI(base_url=s.base + "/v1", api_key=KEY_B, max_retries=5)
        held = _create(a, _file(a, 5, "sim-hold"))  # 20 tokens at 1/s: enqueued for ~20 s
        _wait(a, held.id, "in_progress")
        two = _file(a, 2)
        over = _wait(a, _create(a, two).id, "failed")
        e = _only_error(over)
        assert e.code == "token_limit_exceeded" and e.param is None
        assert "this batch has 2 lines and 5 are already enqueued, over the limit of 6" in e.message
        assert over.output_file_id is None and over.request_counts.total == 0
        # the other key has its own count, and its override lifts the lines cap ...
        seven = _wait(b, _create(b, _file(b, 7)).id, "in_progress", "failed")  # 7 lines, 14 tokens
        assert seven.status == "in_progress" and seven.errors is None  # (it waits for sim-hold's slot)
        # ... but sets a tokens cap: 3 lines of 100 bytes are ~78 tokens
        big = _wait(b, _create(b, _file(b, 3, content="x" * 100)).id, "failed")
        e = _only_error(big)
        assert e.code == "token_limit_exceeded" and "tokens" in e.message and "the limit of 30" in e.message
        # a batch that ends releases its share: the same 2-line file now runs
        a.batches.cancel(held.id)
        _wait(a, held.id, "cancelled")
        again = _wait(a, _create(a, two).id, "completed")
        assert again.errors is None and again.request_counts.completed == 2
    finally:
        s.stop()


def test_two_validations_at_once_cannot_both_pass_a_cap(tmp_path: Path) -> None:
    """Both batches fit the cap alone, not together: the check and the start are one transaction."""
    s = Server(tmp_path, MODELS_YAML, env={"RUNNER_MAX_ENQUEUED_LINES": "5"}, keys=(KEY_A,))
    try:
        c = s.client
        fids = [_file(c, 3, "sim-hold"), _file(c, 3, "sim-hold")]
        ids = [_create(c, f).id for f in fids]  # the API validates two batches at a time
        ends = [_wait(c, i, "in_progress", "failed") for i in ids]
        assert sorted(b.status for b in ends) == ["failed", "in_progress"]
        c.batches.cancel(next(b.id for b in ends if b.status == "in_progress"))
        assert "token_limit_exceeded" in [e.code for b in ends if b.errors for e in b.errors.data]
    finally:
        s.stop()


# -- deadlines -------------------------------------------------------------------------------------------

def _measured(c: Any) -> None:
    """A first batch of sim-slow (10 lines/s), so the model has a measured rate."""
    first = _create(c, _file(c, 20, "sim-slow"))
    assert first.errors is None  # nothing measured yet: no check
    done = _wait(c, first.id, "completed")
    assert done.errors is None


def test_a_batch_that_cannot_finish_in_its_window_is_flagged(tmp_path: Path) -> None:
    s = Server(tmp_path, MODELS_YAML, env={"RUNNER_COMPLETION_WINDOW_SECONDS": "30"}, keys=(KEY_A,))
    try:
        c = s.client
        _measured(c)
        small = _wait(c, _create(c, _file(c, 10, "sim-slow")).id, "in_progress", "completed")
        assert small.errors is None  # 10 lines at ~10/s fit in 30 s
        big = _wait(c, _create(c, _file(c, 600, "sim-slow", start=100)).id, "in_progress", "failed")
        assert big.status == "in_progress"  # flagged, not refused: it runs
        e = _only_error(big)
        assert e.code == "deadline_at_risk" and e.param == "completion_window"
        assert "lines/s of 'sim-slow'" in e.message and "this batch's 600 included" in e.message
        assert "'24h' window has" in e.message
        time.sleep(0.5)  # the notice stays while it runs
        assert _only_error(c.batches.retrieve(big.id)).code == "deadline_at_risk"
        c.batches.cancel(big.id)
    finally:
        s.stop()


def test_refuse_policy_fails_a_batch_that_cannot_finish(tmp_path: Path) -> None:
    env = {"RUNNER_COMPLETION_WINDOW_SECONDS": "30", "RUNNER_DEADLINE_POLICY": "refuse"}
    s = Server(tmp_path, MODELS_YAML, env=env, keys=(KEY_A,))
    try:
        c = s.client
        _measured(c)
        big = _wait(c, _create(c, _file(c, 600, "sim-slow", start=100)).id, "in_progress", "failed")
        assert big.status == "failed"
        e = _only_error(big)
        assert e.code == "deadline_unreachable" and "RUNNER_DEADLINE_POLICY=refuse" in e.message
        ok = _wait(c, _create(c, _file(c, 10, "sim-slow")).id, "completed")  # one that fits still runs
        assert ok.errors is None
    finally:
        s.stop()


def test_model_notices_keep_the_deadline_notice(tmp_path: Path) -> None:
    """A model loading (or failing to) replaces only its own notice in a running batch's errors."""
    db = Database(tmp_path / "runner.db")
    files = FileStore(db, tmp_path / "files")
    batches = BatchStore(db, files)
    tmp, fh = files.new_temp()
    fh.write(b"{}\n")
    fh.close()
    files.commit_upload(tmp, file_id="file-x", owner="o", purpose="batch", filename="x", size=3, created_at=1,
                        expires_at=None)
    batches.create(batch_id="batch_x", owner="o", endpoint="/v1/chat/completions", input_file_id="file-x",
                   completion_window="24h", metadata=None, output_expires_seconds=None, now=1, expires_at=100)
    risk = {"code": "deadline_at_risk", "message": "m", "param": "completion_window", "line": None}
    assert batches.start("batch_x", model="m", total=1, now=2, file_expiry_seconds=10, enqueued_tokens=7,
                         gate=lambda conn: (None, [risk]))
    states = ModelStates(db)
    failed = {"code": "model_load_failed", "message": "f", "param": "model", "line": None}

    def codes() -> list[str]:
        return [e["code"] for e in orjson.loads(batches.get_any_or_raise("batch_x")["errors"])]

    states.load_failed("m", failed, error="e", attempts=1, retry_at=5.0, now=3.0)
    assert codes() == ["deadline_at_risk", "model_load_failed"]
    states.load_failed("m", failed, error="e", attempts=2, retry_at=9.0, now=4.0)
    assert codes() == ["deadline_at_risk", "model_load_failed"]
    states.loaded("m", 5.0)
    assert codes() == ["deadline_at_risk"]
    assert batches.get_any_or_raise("batch_x")["enqueued_tokens"] == 7
