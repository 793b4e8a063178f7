"""A lean keep-alive HTTP/1.1 GET client for the poll-latency figures.

On a 2-core box the load generator shares the CPU with the server it measures: httpx spends about a
millisecond of Python per request, so 200 httpx pollers measure mostly themselves. This client
writes one request line and reads one Content-Length body per poll on an asyncio stream.
"""

from __future__ import annotations

import asyncio
import time


class PollConnection:
    """One keep-alive connection; `get` returns (status, body)."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {host}:{port}\r\n{extra}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
        self._reader = self._writer = None


async def poll_loop(host: str, port: int, path: list[str], stop: asyncio.Event, samples: list[tuple[float, float]],
                    errors: list[int], interval: float, offset: float, record_after: int = 0) -> None:
    """GET path[0] every `interval` seconds (after `offset`) until `stop`, recording (start, latency)
    of each poll once len(path) > record_after: a caller can start the pollers (connections open,
    as long-running clients' are) on a warm-up path and switch them to the path to measure."""
    conn = PollConnection(host, port)
    try:
        await asyncio.sleep(offset)
        while not stop.is_set():
            target, measured = path[-1], len(path) > record_after
            t0 = time.perf_counter()
            try:
                status, _ = await conn.get(target)
                if status != 200 and measured:
                    errors.append(status)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if measured:
                    errors.append(0)
            if measured:
                samples.append((t0, time.perf_counter() - t0))
            await asyncio.sleep(interval)
    finally:
        await conn.close()
