"""/v1/files: upload (streamed), list, retrieve, content (streamed), delete."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runner.api.auth import owner
from runner.api.idempotency import FILES, once, request_key, upload_hash
from runner.api.params import choice_param, expires_after, int_param, str_param
from runner.api.ranges import byte_range
from runner.api.responses import OrjsonResponse
from runner.api.services import Services
from runner.api.uploads import receive_upload
from runner.errors import InvalidRequest, NotFound, clip
from runner.ids import looks_like_id, new_file_id
from runner.wire import file_object, page

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _file_id(request: Request) -> str:
    file_id = str(request.path_params["file_id"])
    if not looks_like_id(file_id) or not file_id.startswith("file-"):
        raise NotFound(f"No such File object: {clip(file_id)}", param="id")
    return file_id


def _expires_after_from_form(fields: dict[str, str]) -> int | None:
    if "expires_after" in fields:
        try:
            value: Any = orjson.loads(fields["expires_after"])
        except orjson.JSONDecodeError:
            raise InvalidRequest("'expires_after' must be a JSON object.", param="expires_after",
                                 code="invalid_value") from None
        if not isinstance(value, dict):  # `null` is not "absent" (see #6: found by schemathesis)
            raise InvalidRequest("'expires_after' must be a JSON object.", param="expires_after",
                                 code="invalid_value")
        return expires_after(value, "expires_after")
    nested = {k[len("expires_after["):-1]: v for k, v in fields.items() if k.startswith("expires_after[")}
    if nested:
        return expires_after(nested, "expires_after")
    return None


async def create_file(request: Request) -> Response:
    svc = _services(request)
    key = request_key(request)  # an Idempotency-Key: at most one file per key and upload (#16)
    tmp_path, tmp = await run_in_threadpool(svc.files.new_temp)
    try:
        try:
            form = await receive_upload(request, tmp, svc.settings.max_upload_bytes, digest=key is not None)
        finally:
            tmp.close()
        purpose = form.fields.get("purpose")
        if form.filename is None:
            raise InvalidRequest("Missing 'file': send the file as a multipart part named 'file'.", param="file",
                                 code="missing_file")
        unknown = sorted(k for k in form.fields if k not in ("purpose", "expires_after")
                         and not k.startswith("expires_after["))
        if unknown:  # as POST /v1/batches does (see #6: found by schemathesis)
            raise InvalidRequest(f"Unrecognized request argument supplied: {', '.join(map(clip, unknown[:3]))}"
                                 f"{' and more' if len(unknown) > 3 else ''}", param=clip(unknown[0]),
                                 code="unknown_parameter")
        if not purpose:
            raise InvalidRequest("Missing 'purpose'.", param="purpose", code="missing_purpose")
        if purpose not in PURPOSES:
            raise InvalidRequest(f"Invalid purpose {clip(purpose, quote=True)}; one of {', '.join(PURPOSES)}.",
                                 param="purpose", code="invalid_purpose")
        # Any name is taken, as OpenAI takes it: the openai SDK names bytes "upload" and tools that
        # upload bytes (bespokelabs-curator) never choose one. Batch creation checks every line.
        filename = form.filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload"
        seconds = _expires_after_from_form(form.fields)
        now = int(time.time())
        if seconds is None and purpose == "batch":
            seconds = svc.settings.file_expiry_seconds

        async def commit() -> Response:
            row = await run_in_threadpool(
                svc.files.commit_upload,
                tmp_path,
                file_id=new_file_id(),
                owner=owner(request),
                purpose=purpose,
                filename=filename,
                size=form.size,
                created_at=now,
                expires_at=None if seconds is None else now + seconds,
            )
            return OrjsonResponse(file_object(row))

        if key is None or form.file_sha256 is None:
            return await commit()
        # Claimed only now, when the bytes are on disk and their digest known: a replay commits nothing
        # and the temp file goes below.
        return await once(request, svc, FILES, key, upload_hash(form.fields, form.filename,
                                                                 form.file_sha256.hexdigest()), commit,
                          exists=lambda file_id: svc.files.get_any(file_id) is not None)
    finally:
        tmp_path.unlink(missing_ok=True)


async def list_files(request: Request) -> Response:
    svc = _services(request)
    purpose = str_param(request, "purpose", 64)
    limit = int_param(request, "limit", 10_000, 1, 10_000)
    order = choice_param(request, "order", "desc", ("asc", "desc"))
    after = str_param(request, "after")
    rows, has_more = await run_in_threadpool(
        svc.files.list, owner(request), purpose=purpose, order=order, after=after, limit=limit
    )
    return OrjsonResponse(page([file_object(r) for r in rows], has_more))


async def retrieve_file(request: Request) -> Response:
    svc = _services(request)
    row = await run_in_threadpool(svc.files.get, owner(request), _file_id(request))
    return OrjsonResponse(file_object(row))


async def file_content(request: Request) -> Response:
    """GET (and HEAD: headers only, the file is not opened) of a file's bytes, whole or one range.
    A file whose size on disk no longer matches its row answers file_damaged (check_servable)."""
    svc = _services(request)
    row = await run_in_threadpool(svc.files.get, owner(request), _file_id(request))
    await run_in_threadpool(svc.files.check_servable, row)
    size = int(row["bytes"])
    etag = f'"{row["id"]}-{size}"'  # a running batch's output grows: its ETag changes with it
    headers = {"accept-ranges": "bytes", "etag": etag}
    span = byte_range(request.headers.get("range"), size, if_range=request.headers.get("if-range"), etag=etag)
    status, start, length = 200, 0, size
    if span is not None:
        status, start, length = 206, span[0], span[1] - span[0] + 1
        headers["content-range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["content-length"] = str(length)
    media_type = "application/jsonl" if row["filename"].endswith(".jsonl") else "application/octet-stream"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(iterate_in_threadpool(svc.files.iter_content(row, start, length)), status_code=status,
                             headers=headers, media_type=media_type)


async def delete_file(request: Request) -> Response:
    svc = _services(request)
    file_id = _file_id(request)
    await run_in_threadpool(svc.files.delete, owner(request), file_id, int(time.time()))
    return OrjsonResponse({"id": file_id, "object": "file", "deleted": True})
