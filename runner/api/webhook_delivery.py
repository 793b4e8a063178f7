"""Webhook delivery: Standard Webhooks signing, one bounded HTTP POST, and the outbox worker.

The worker runs as an asyncio task in the API process (beside the file sweeper). It reads due rows
of the outbox (runner/store/webhooks.py), POSTs each with at most RUNNER_WEBHOOK_CONCURRENCY in
flight, deletes a row only after a 2xx (at least once: a crash between the 2xx and the delete sends
it again, with the same webhook-id so a receiver can drop the duplicate), and otherwise reschedules
it with exponential backoff and jitter. The whole of one POST (connect, TLS, send, status line) is
under one RUNNER_WEBHOOK_TIMEOUT, so a receiver that accepts and then stalls costs one slot for that
long and never the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import ssl
import time
import urllib.parse
from typing import Any

from runner.settings import Settings
from runner.store.webhooks import WebhookStore

logger = logging.getLogger(__name__)

MAX_STATUS_LINE = 8192


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the base64 part after whsec_
    (what openai's client.webhooks.unwrap checks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secrets: list[str], msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers; several secrets (a rotation's grace day) give one
    space-separated signature each, and a receiver accepts any."""
    ts = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in secrets),
    }


def secrets_of(row: Any, now: float) -> list[str]:
    keys = [row["secret"]]
    if row["old_secret"] and (row["old_secret_until"] or 0) > now:
        keys.append(row["old_secret"])
    return keys


async def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST `body` to `url`; the response's status code. Raises OSError/TimeoutError/ValueError.

    A small HTTP/1.1 client on asyncio streams: the API's runtime dependencies have no HTTP client,
    and this one bounds the whole exchange with one deadline. Redirects are not followed (a 3xx is a
    failed delivery, as in Standard Webhooks)."""
    u = urllib.parse.urlsplit(url)
    https = u.scheme == "https"
    host = u.hostname or ""
    port = u.port or (443 if https else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    authority = u.netloc.rpartition("@")[2]

    async def exchange() -> int:
        ctx = ssl.create_default_context() if https else None
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if https else None)
        try:
            head = [f"POST {target} HTTP/1.1", f"Host: {authority}", "Content-Type: application/json",
                    f"Content-Length: {len(body)}", "Connection: close", "User-Agent: runner-webhooks/1"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            line = await reader.readline()
            parts = line[:MAX_STATUS_LINE].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise ValueError("the receiver did not answer with an HTTP status line")
            return int(parts[1])
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    return await asyncio.wait_for(exchange(), timeout)


async def send_signed(url: str, msg_id: str, body: str, secrets: list[str], timeout: float) -> int:
    return await post(url, body.encode(), signed_headers(secrets, msg_id, body), timeout)


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling, capped, 50-100% jitter
    so endpoints that failed together do not retry in lockstep."""
    base = min(settings.webhook_backoff_max, settings.webhook_backoff * 2 ** min(attempts - 1, 60))
    return base * random.uniform(0.5, 1.0)


class WebhookWorker:
    """Drains the outbox until stopped; restarts pick up where it left off (the outbox is SQLite)."""

    def __init__(self, store: WebhookStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.wake = asyncio.Event()  # set to look at the outbox now (an API-side ending)
        self._inflight: dict[int, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        try:
            while not stop.is_set():
                free = s.webhook_concurrency - len(self._inflight)
                if free > 0:
                    try:
                        rows = await asyncio.to_thread(self.store.due, time.time(), free, set(self._inflight))
                    except Exception:
                        logger.exception("webhook outbox read failed")
                        rows = []
                    for row in rows:
                        task = asyncio.create_task(self._deliver(row))
                        self._inflight[row["seq"]] = task
                        task.add_done_callback(lambda _t, seq=row["seq"]: self._inflight.pop(seq, None))
                self.wake.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait()),
                         *self._inflight.values()]
                await asyncio.wait(waits, timeout=s.webhook_poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for w in waits[:2]:
                    w.cancel()
        finally:
            # Deliveries cut short stay in the outbox: the next start sends them (same webhook-id).
            for task in list(self._inflight.values()):
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _deliver(self, row: Any) -> None:
        s = self.settings
        now = time.time()
        try:
            status = await send_signed(row["url"], row["event_id"], row["body"], secrets_of(row, now),
                                       s.webhook_timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            error = f"timed out after {s.webhook_timeout:g} s"
        except (OSError, ValueError, ssl.SSLError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            if error is None:
                await asyncio.to_thread(self.store.delivered, row["seq"], row["endpoint_id"])
                logger.info("webhook delivered event=%s endpoint=%s attempt=%d", row["event_id"],
                            row["endpoint_id"], row["attempts"] + 1)
                return
            attempts = row["attempts"] + 1
            retry_at = None if attempts >= s.webhook_max_attempts else time.time() + backoff(s, attempts)
            disabled = await asyncio.to_thread(
                self.store.attempt_failed, row["seq"], row["endpoint_id"], error=error, now=time.time(),
                retry_at=retry_at, disable_failures=s.webhook_disable_failures,
                disable_seconds=s.webhook_disable_seconds)
            logger.warning("webhook delivery failed event=%s endpoint=%s attempt=%d: %s%s", row["event_id"],
                           row["endpoint_id"], attempts, error,
                           "; giving up on this event" if retry_at is None else "")
            if disabled:
                logger.warning("webhook endpoint disabled after %d failures in a row endpoint=%s",
                               s.webhook_disable_failures, row["endpoint_id"])
        except Exception:
            # e.g. the database busy: the row keeps its old schedule and is tried again.
            logger.exception("webhook outbox update failed event=%s", row["event_id"])
