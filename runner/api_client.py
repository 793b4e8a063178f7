"""A small HTTP client for runner's own API, on the standard library only (urllib).

`runner submit` and `runner status` use it. runner's base install has no httpx or openai (they are
test dependencies, locks/base.txt), and a client command should work after `pip install runner`
alone, so this speaks the few calls it needs itself: JSON requests, a streamed multipart upload and
a download that resumes with Range after a dropped connection.

Two failures are told apart, each as one line: the server answered with an error (`ServerError`,
OpenAI's error shape -> "HTTP 401 invalid_api_key: ..."), or no answer came at all (`Unreachable`:
connection refused, DNS, timeout).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
DOWNLOAD_ATTEMPTS = 5


class ServerError(Exception):
    """The server answered with an HTTP error; `line()` is the one line a user sees."""

    def __init__(self, status: int, message: str, err_code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_code = err_code
        self.param = param

    def line(self) -> str:
        what = f"HTTP {self.status}" + (f" {self.err_code}" if self.err_code else "")
        where = f" (param {self.param})" if self.param else ""
        return f"{what}: {self.message}{where}"


class Unreachable(Exception):
    """No HTTP answer: connection refused, a name that does not resolve, a timeout."""


def _server_error(exc: urllib.error.HTTPError) -> ServerError:
    raw = b""
    with contextlib.suppress(OSError):
        raw = exc.read(64 * 1024)
    return _error_from(exc.code, str(exc.reason), raw)


def _error_from(status: int, reason: str, raw: bytes) -> ServerError:
    try:
        err = json.loads(raw)["error"]
        return ServerError(status, str(err.get("message") or reason), err.get("code"), err.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not OpenAI's shape (a proxy's HTML page, say): a bounded piece of the body says what it was.
        text = raw[:200].decode("utf-8", "replace").strip() or reason
        return ServerError(status, " ".join(text.split()))


def _go_ahead(sock: Any, wait: float = 1.0) -> bool:
    """After headers with `Expect: 100-continue`: True to send the body (the interim 100 came, or
    nothing within `wait` seconds: a server or proxy that ignores Expect, as RFC 9110 allows),
    False when a final answer came first (it is then read as the response)."""
    ready, _, _ = select.select([sock], [], [], wait)
    if not ready:
        return True
    peek = sock.recv(16, socket.MSG_PEEK)
    if not peek.startswith((b"HTTP/1.1 100", b"HTTP/1.0 100")):
        return False
    seen = b""
    while not seen.endswith(b"\r\n\r\n"):  # consume the interim answer, byte by byte: it is short
        byte = sock.recv(1)
        if not byte:
            return False
        seen += byte
    return True


def normalize_base_url(url: str) -> str:
    """The API root, like the openai SDK's base_url ("http://host:8000/v1"). A bare server address
    (no path) gets /v1, since runner serves nothing else there that a client means."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    return url + "/v1" if parts.path in ("", "/") else url


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 60.0) -> None:
        self.base_url = normalize_base_url(base_url)
        self.api_key = api_key
        self.timeout = timeout

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"user-agent": "runner-cli", "accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _open(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self._headers(headers))
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - the URL is checked http(s)
        except urllib.error.HTTPError as exc:
            raise _server_error(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise self._unreachable(reason if isinstance(reason, OSError) else OSError(str(reason))) from None
        except OSError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: OSError) -> Unreachable:
        if isinstance(exc, ConnectionRefusedError):
            return Unreachable(f"cannot reach {self.base_url} (connection refused)")
        if isinstance(exc, socket.gaierror):
            return Unreachable(f"cannot reach {self.base_url} (host name does not resolve)")
        return Unreachable(f"no answer from {self.base_url} ({exc or type(exc).__name__})")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else None
        try:
            with self._open(method, path, data, headers) as resp:
                return json.loads(resp.read())
        except (TimeoutError, ConnectionError) as exc:
            raise Unreachable(f"connection to {self.base_url} lost ({exc or type(exc).__name__})") from None
        except ValueError as exc:
            raise ServerError(200, f"the answer is not JSON ({exc})") from None

    def upload(self, path: Path, purpose: str = "batch") -> dict[str, Any]:
        """POST /files as multipart/form-data, streaming the file (it may be hundreds of MB).

        Over plain HTTP it sends `Expect: 100-continue` and waits for the server's go-ahead before
        the body: a server that refuses the upload at once (a wrong key, a file over its size
        limit, too many uploads) answers before reading it and closes the connection, and a client
        still sending would get a broken pipe instead of that answer."""
        boundary = uuid.uuid4().hex
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
                f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{name}"\r\n'
                f"content-type: application/jsonl\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = path.stat().st_size
        parts = urllib.parse.urlsplit(self.base_url)
        https = parts.scheme == "https"
        headers = self._headers({"content-type": f"multipart/form-data; boundary={boundary}",
                                 "content-length": str(len(head) + size + len(tail))})
        if not https:  # ssl sockets cannot peek (MSG_PEEK) at the interim answer
            headers["expect"] = "100-continue"
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.putrequest("POST", parts.path + "/files", skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if https or _go_ahead(conn.sock):
                try:
                    conn.send(head)
                    with open(path, "rb") as f:
                        while chunk := f.read(CHUNK):
                            conn.send(chunk)
                    conn.send(tail)
                except (BrokenPipeError, ConnectionResetError):
                    raise Unreachable(f"{self.base_url} closed the connection during the upload without an "
                                      "answer (a refused key, or a file over its upload limit?)") from None
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise self._unreachable(exc) from None
        except http.client.HTTPException as exc:
            raise Unreachable(f"upload to {self.base_url} lost ({type(exc).__name__})") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _error_from(resp.status, resp.reason, raw)
        try:
            result: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise ServerError(resp.status, f"the answer is not JSON ({exc})") from None
        return result

    def download(self, file_id: str, dest: Path) -> int:
        """GET /files/{id}/content into dest: streamed to dest's .part file, renamed when whole.
        A connection that drops midway resumes from the bytes already written with Range (the
        server answers 206); an answer of 200 instead (no range support) starts over."""
        part = dest.with_name(dest.name + ".part")
        written = 0
        etag: str | None = None
        for attempt in range(DOWNLOAD_ATTEMPTS):
            headers: dict[str, str] = {"accept": "*/*"}
            if written:
                headers["range"] = f"bytes={written}-"
                if etag:
                    headers["if-range"] = etag
            try:
                with self._open("GET", f"/files/{urllib.parse.quote(file_id)}/content", None, headers) as resp:
                    etag = resp.headers.get("etag") or etag
                    mode = "ab" if written and resp.status == 206 else "wb"
                    if mode == "wb":
                        written = 0
                    got = 0
                    with open(part, mode) as out:
                        while chunk := resp.read(CHUNK):
                            out.write(chunk)
                            got += len(chunk)
                            written += len(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    expected = resp.headers.get("content-length")
                    if expected is not None and int(expected) != got:
                        raise ConnectionError(f"{got} of {expected} bytes arrived")
                os.replace(part, dest)
                return written
            except (Unreachable, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                if attempt == DOWNLOAD_ATTEMPTS - 1:
                    raise Unreachable(f"download of {file_id} failed after {DOWNLOAD_ATTEMPTS} attempts "
                                      f"({exc})") from None
        raise AssertionError("unreachable")  # the loop returns or raises
