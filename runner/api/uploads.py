"""Multipart upload: a request body -> one file streamed into a temp file, plus small text fields.

The file part goes straight to disk chunk by chunk as the body arrives (never held whole in
memory) and the size cap is enforced while streaming, so an over-size upload costs at most the cap.
"""

from __future__ import annotations

import errno
import hashlib
import os
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runner.errors import ApiError, InvalidRequest, PayloadTooLarge, ServiceUnavailable, clip

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32


class UploadedForm:
    """Multipart callbacks -> the file written to `out`, text fields, and the first error met."""

    def __init__(self, out: IO[bytes], max_bytes: int, *, digest: bool = False) -> None:
        self.out = out
        self.max_bytes = max_bytes
        # sha256 of the file's bytes as they stream by, for an Idempotency-Key (api/idempotency.py);
        # only then, so a plain upload pays nothing for it.
        self.file_sha256 = hashlib.sha256() if digest else None
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.error: ApiError | None = None
        self._parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._hfield = b""
        self._hvalue = b""
        self._name = ""
        self._is_file = False
        self._buf = bytearray()
        self.complete = False

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error

    def on_part_begin(self) -> None:
        self._headers = {}
        self._parts += 1
        if self._parts > MAX_PARTS:
            self._fail(InvalidRequest("Too many parts in the multipart body.", code="invalid_multipart"))

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hfield += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._hfield.lower()] = self._hvalue
        self._hfield, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        _, disp = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = disp.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = b"filename" in disp
        self._buf = bytearray()
        if not self._is_file:
            return
        if self._name != "file":
            self._fail(InvalidRequest(f"Unexpected file part {clip(self._name, quote=True)}; send the file as 'file'.",
                                      param="file", code="invalid_multipart"))
        elif self.filename is not None:
            self._fail(InvalidRequest("Send exactly one 'file' part.", param="file", code="invalid_multipart"))
        else:
            self.filename = disp[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self._fail(PayloadTooLarge(f"The upload is larger than the limit of {self.max_bytes} bytes.",
                                           param="file"))
                return
            self.out.write(chunk)
            if self.file_sha256 is not None:
                self.file_sha256.update(chunk)
            return
        self._buf += chunk
        if len(self._buf) > MAX_FIELD_BYTES:
            self._fail(InvalidRequest(f"Form field {clip(self._name, quote=True)} is too long.", param=clip(self._name),
                                      code="invalid_multipart"))

    def on_end(self) -> None:
        self.complete = True

    def on_part_end(self) -> None:
        if self.error is not None or self._is_file:
            return
        try:
            self.fields[self._name] = self._buf.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(InvalidRequest(f"Form field {clip(self._name, quote=True)} is not UTF-8.",
                                      param=clip(self._name), code="invalid_utf8"))


async def receive_upload(request: Request, out: IO[bytes], max_bytes: int, *, digest: bool = False) -> UploadedForm:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise InvalidRequest(
            "The request must be multipart/form-data with a 'file' part and a 'purpose' field.",
            param="file",
            code="invalid_content_type",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart body has no boundary.", param="file", code="invalid_multipart")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 1024 * 1024:
        raise PayloadTooLarge(f"The upload is larger than the limit of {max_bytes} bytes.", param="file")

    form = UploadedForm(out, max_bytes, digest=digest)
    callbacks = {
        name: getattr(form, name)
        for name in ("on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
                     "on_header_end", "on_headers_finished", "on_end")
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if form.error is not None:
                break
        else:
            parser.finalize()
    except ApiError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk filled while streaming: not the client's fault
            raise ServiceUnavailable("The server's disk is full; retry later.", code="disk_full",
                                     headers={"retry-after": "30"}) from None
        raise
    except Exception as exc:  # the parser's own errors mean a malformed body: the client's mistake
        form._fail(InvalidRequest(f"Malformed multipart body: {clip(str(exc))}", code="invalid_multipart"))
    if form.error is None and not form.complete:
        # A body cut short (no closing boundary) would otherwise commit a truncated file.
        form._fail(InvalidRequest("The multipart body is incomplete: no closing boundary.",
                                  code="invalid_multipart"))
    if form.error is not None:
        raise form.error
    # Off the event loop: fsyncing a large upload takes long enough to stall every other request.
    await run_in_threadpool(_make_durable, out)
    return form


def _make_durable(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())
