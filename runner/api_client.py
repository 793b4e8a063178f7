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
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
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
    try:
        err = json.loads(raw)["error"]
        return ServerError(exc.code, str(err.get("message") or exc.reason), err.get("code"), err.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not OpenAI's shape (a proxy's HTML page, say): a bounded piece of the body says what it was.
        text = raw[:200].decode("utf-8", "replace").strip() or str(exc.reason)
        return ServerError(exc.code, " ".join(text.split()))


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
            if isinstance(reason, ConnectionRefusedError):
                why = "connection refused"
            elif isinstance(reason, socket.gaierror):
                why = "host name does not resolve"
            else:
                why = str(reason)
            raise Unreachable(f"cannot reach {self.base_url} ({why})") from None
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise Unreachable(f"no answer from {self.base_url} ({exc or type(exc).__name__})") from None

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
        """POST /files as multipart/form-data, streaming the file (it may be hundreds of MB)."""
        boundary = uuid.uuid4().hex
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
                f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{name}"\r\n'
                f"content-type: application/jsonl\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            yield head
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield tail

        headers = {"content-type": f"multipart/form-data; boundary={boundary}",
                   "content-length": str(len(head) + size + len(tail))}
        try:
            with self._open("POST", "/files", body(), headers) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except (TimeoutError, ConnectionError) as exc:
            raise Unreachable(f"upload to {self.base_url} lost ({exc or type(exc).__name__})") from None

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
