"""Signed webhooks against a real local receiver: a real `runner serve` (engine, simulated backend),
endpoints managed with the official openai client, every delivery checked with client.webhooks.unwrap.

One server run covers each ending (completed, failed, cancelled), the `test` event, secret rotation and
owner isolation; a restart in the middle shows an undelivered event surviving it with the same
webhook-id; the second run expires a batch and disables an endpoint that always fails.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine.test_server import Server as EngineServer

from runner.store.webhooks import new_secret

openai = pytest.importorskip("openai")

KEY, OTHER_KEY = "sk-webhooks-a", "sk-webhooks-b"
MODELS_YAML = """
models:
  - id: sim-chat
    backend: simulated
    max_tokens: 8
  - id: sim-slow
    backend: simulated
    max_tokens: 32
    engine_args: {tokens_per_second: 200, max_inflight: 4}
"""
FAST_RETRIES = {"RUNNER_WEBHOOK_POLL_INTERVAL": "0.1", "RUNNER_WEBHOOK_BACKOFF": "0.2",
                "RUNNER_WEBHOOK_BACKOFF_MAX": "0.4", "RUNNER_WEBHOOK_DISABLE_SECONDS": "0",
                "RUNNER_WEBHOOK_TIMEOUT": "2"}


class Receiver:
    """A local HTTP server that records every POST; /flaky answers 500 until `restarted` is set (the
    runner server it hears from was stopped and started again), /down always."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes, int]] = []
        self.restarted = False
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 500 if self.path == "/down" or (self.path == "/flaky" and not outer.restarted) else 200
                with outer.lock:
                    outer.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, path: str) -> list[tuple[dict[str, str], bytes, int]]:
        with self.lock:
            return [(h, b, s) for p, h, b, s in self.got if p == path]


def _server(tmp: Path, env: dict[str, str]) -> EngineServer:
    """tests/engine/test_server.Server with both keys, fast webhook retries and `other`, a client for
    the second key."""
    s = EngineServer(tmp, MODELS_YAML, env={**FAST_RETRIES, **env}, keys=(KEY, OTHER_KEY))
    s.other = openai.OpenAI(base_url=s.base + "/v1", api_key=OTHER_KEY, max_retries=2)  # type: ignore[attr-defined]
    return s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _submit(client: Any, lines: list[dict[str, Any]]) -> str:
    f = io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    f.name = "in.jsonl"
    file_id = client.files.create(file=f, purpose="batch").id
    return str(client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                     completion_window="24h").id)


def _lines(n: int, model: str = "sim-chat", **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}, **extra}
            for i in range(n)]


def _until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _event(client: Any, rx: Receiver, path: str, batch_id: str, secret: str) -> tuple[Any, dict[str, str]]:
    """The delivered (2xx) event about `batch_id` at `path`, verified by the SDK."""
    def find() -> Any:
        for headers, body, status in rx.received(path):
            if status == 200 and orjson.loads(body)["data"]["id"] == batch_id:
                return headers, body
        return None
    headers, body = _until(find, f"an event for {batch_id} at {path}")
    event = client.webhooks.unwrap(body, headers, secret=secret)
    assert headers["webhook-id"] == event.id and event.id.startswith("evt_")
    assert event.object == "event" and event.data.id == batch_id and abs(event.created_at - time.time()) < 60
    return event, headers


def test_webhooks_for_each_ending_across_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    rx = receiver
    s = _server(tmp_path, {"RUNNER_WEBHOOK_DISABLE_FAILURES": "1000"})
    try:
        c = s.client
        ok = c.webhooks.create(name="all endings", url=rx.url + "/ok",
                               event_types=["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"])
        secret = ok.signing_secret
        assert secret.startswith("whsec_") and ok.object == "webhook_endpoint" and ok.id.startswith("we_")
        got = c.webhooks.retrieve(ok.id)
        assert "signing_secret" not in got.model_dump() and got.signing_secret_hint == "whsec_..." + secret[-4:]
        assert got.event_types == ok.event_types and got.url == rx.url + "/ok"
        assert [e.id for e in c.webhooks.list()] == [ok.id]
        # another owner sees none of it
        assert list(s.other.webhooks.list()) == []
        with pytest.raises(openai.NotFoundError):
            s.other.webhooks.retrieve(ok.id)
        with pytest.raises(openai.NotFoundError):
            s.other.webhooks.delete(ok.id)
        # bad input: OpenAI's error shape with runner's codes
        for kwargs, code in [({"url": "ftp://x/"}, "invalid_webhook_url"),
                             ({"url": "http://a b/"}, "invalid_webhook_url"),
                             ({"event_types": ["response.completed"]}, "invalid_value"),
                             ({"event_types": []}, "invalid_value"), ({"name": ""}, "invalid_value")]:
            args = {"name": "n", "url": rx.url + "/ok", "event_types": ["batch.completed"], **kwargs}
            with pytest.raises(openai.BadRequestError) as ei:
                c.webhooks.create(**args)
            assert ei.value.code == code, (kwargs, ei.value.body)

        # `test` sends a signed sample event and reports the receiver's status
        result = c.webhooks.test(ok.id, event_type="batch.failed")
        assert (result.status_code, result.webhook_endpoint_id, result.event_type) == (200, ok.id, "batch.failed")
        headers, body, _ = rx.received("/ok")[0]
        assert c.webhooks.unwrap(body, headers, secret=secret).type == "batch.failed"
        with pytest.raises(openai.InvalidWebhookSignatureError):
            c.webhooks.unwrap(body, headers, secret=new_secret())  # another endpoint's secret

        completed = _submit(c, _lines(3))
        failed = _submit(c, _lines(2, method="GET"))  # fails validation
        cancelled = _submit(c, _lines(200, model="sim-slow"))
        _until(lambda: c.batches.retrieve(cancelled).status == "in_progress", "the slow batch to start")
        c.batches.cancel(cancelled)
        for batch_id, kind in ((completed, "batch.completed"), (failed, "batch.failed"),
                               (cancelled, "batch.cancelled")):
            event, _ = _event(c, rx, "/ok", batch_id, secret)
            assert event.type == kind
            assert c.batches.retrieve(batch_id).status == kind.removeprefix("batch.")

        # An event whose receiver fails, then the server restarts: it arrives with the same webhook-id.
        flaky = c.webhooks.create(name="flaky", url=rx.url + "/flaky", event_types=["batch.completed"])
        survivor = _submit(c, _lines(2))
        _until(lambda: len(rx.received("/flaky")) >= 2, "two failed attempts")
        assert all(st == 500 for _, _, st in rx.received("/flaky"))
    finally:
        s.stop()
    # The second run expires batches after 2 s and disables an endpoint after 3 failures in a row.
    rx.restarted = True
    before = len(rx.received("/flaky"))
    s = _server(tmp_path, {"RUNNER_COMPLETION_WINDOW_SECONDS": "2", "RUNNER_WEBHOOK_DISABLE_FAILURES": "3"})
    try:
        c = s.client
        event, headers = _event(c, rx, "/flaky", survivor, flaky.signing_secret)
        attempts = rx.received("/flaky")
        assert len(attempts) == before + 1 and attempts[-1][2] == 200, "delivered once, after the restart"
        assert {h["webhook-id"] for h, _, _ in attempts} == {event.id}, "every attempt carries the same webhook-id"
        assert c.webhooks.retrieve(flaky.id).model_dump()["status"] == "enabled"

        # rotate_secret keeping the old one for a day: deliveries verify with either
        rotated = c.webhooks.rotate_secret(ok.id, keep_old_secret_active_for_24_hours=True)
        assert rotated.signing_secret != secret and rotated.signing_secret.startswith("whsec_")
        down = c.webhooks.create(name="down", url=rx.url + "/down", event_types=["batch.expired"])
        expired = _submit(c, _lines(200, model="sim-slow"))
        event, headers = _event(c, rx, "/ok", expired, rotated.signing_secret)
        assert event.type == "batch.expired" and c.batches.retrieve(expired).status == "expired"
        body = next(b for h, b, st in rx.received("/ok") if h["webhook-id"] == event.id and st == 200)
        c.webhooks.unwrap(body, headers, secret=secret)

        # an endpoint that always fails is disabled after 3 failures in a row (the test setting)
        _until(lambda: c.webhooks.retrieve(down.id).model_dump()["status"] == "disabled", "the endpoint disabled")
        n = len(rx.received("/down"))
        assert n >= 3
        time.sleep(1.0)
        assert len(rx.received("/down")) == n, "a disabled endpoint gets no more attempts"
        # an update enables it again and its queued event is tried at once
        updated = c.webhooks.update(down.id, url=rx.url + "/ok")
        assert updated.model_dump()["status"] == "enabled" and updated.url == rx.url + "/ok"
        _until(lambda: sum(1 for h, _, _ in rx.received("/ok") if h["webhook-id"] == event.id) >= 2,
               "the queued event sent to the re-enabled endpoint")

        deleted = c.webhooks.delete(down.id)
        assert (deleted.id, deleted.deleted, deleted.object) == (down.id, True, "webhook_endpoint.deleted")
        with pytest.raises(openai.NotFoundError):
            c.webhooks.retrieve(down.id)
    finally:
        s.stop()


def test_the_engine_rings_the_api_so_an_ending_is_delivered_at_once(tmp_path: Path, receiver: Receiver) -> None:
    """The engine ends a batch and rings api.bell: the event goes out at once, though the worker's timed
    look at the outbox comes only every 30 s here (without the ring it would wait for that)."""
    rx = receiver
    s = _server(tmp_path, {"RUNNER_WEBHOOK_POLL_INTERVAL": "30"})
    try:
        c = s.client
        ok = c.webhooks.create(name="completions", url=rx.url + "/ok", event_types=["batch.completed"])
        time.sleep(0.5)  # the worker has made its first look and sleeps for 30 s now
        completed = _submit(c, _lines(3))
        _until(lambda: c.batches.retrieve(completed).status == "completed", "the batch to complete")
        ended = time.monotonic()
        event, _ = _event(c, rx, "/ok", completed, ok.signing_secret)
        assert event.type == "batch.completed"
        assert time.monotonic() - ended < 5, "delivered only by the timed look, not at the engine's ring"
    finally:
        s.stop()
