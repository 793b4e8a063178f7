"""File content over HTTP (issue #14, fault 11): HEAD reads nothing, `Range` gives 206 / 416.

A real `runner serve`; what the API process reads from storage is measured by its `rchar` in
/proc/<pid>/io (every byte passed to read(), sockets included), so "HEAD reads nothing" and "a
range reads only the range" are measured, not assumed. Before the fix a HEAD streamed the whole
file (and uvicorn dropped it), and `Range` was ignored: a 200 with the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from .helpers import LiveServer, assert_error_shape, start_server, stop_server, upload

SIZE = 24 * 1024 * 1024


def _content() -> bytes:
    line = b'{"n": "' + b"x" * 1000 + b'"}\n'
    whole = line * (SIZE // len(line) + 1)
    return bytes(i % 251 for i in range(1000)) + whole[: SIZE - 1000]  # distinct bytes up front


def _rchar(server: LiveServer) -> int:
    for line in Path(f"/proc/{server.proc.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, bytes]]:
    """One server and one 24 MB file for the module (each test only reads it)."""
    if not Path("/proc/self/io").exists():
        pytest.skip("no /proc/<pid>/io here")
    server = start_server(tmp_path_factory.mktemp("content"))
    try:
        content = _content()
        with server.client() as c:
            resp = upload(c, content, filename="big.jsonl", purpose="user_data")
            assert resp.status_code == 200, resp.text
        yield server, resp.json()["id"], content
    finally:
        stop_server(server)


def test_head_answers_headers_and_reads_nothing(served: tuple[LiveServer, str, bytes]) -> None:
    server, fid, content = served
    with server.client() as c:
        before = _rchar(server)
        head = c.head(f"/v1/files/{fid}/content")
        read = _rchar(server) - before
        assert head.status_code == 200, head.text
        assert read < 256 * 1024, f"HEAD read {read} bytes"
        assert head.headers["content-length"] == str(SIZE) and head.content == b""
        assert head.headers["accept-ranges"] == "bytes"
        # The measure can see a read: a GET reads the whole file.
        before = _rchar(server)
        got = c.get(f"/v1/files/{fid}/content")
        assert got.status_code == 200 and got.content == content
        assert got.headers["accept-ranges"] == "bytes" and got.headers["etag"] == head.headers["etag"]
        assert _rchar(server) - before >= SIZE
        # HEAD with a range answers the 206's headers, again without reading.
        before = _rchar(server)
        part = c.head(f"/v1/files/{fid}/content", headers={"Range": "bytes=-10"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"
        assert part.headers["content-length"] == "10" and _rchar(server) - before < 256 * 1024


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=10-19", 10, 19),
    ("bytes=0-0", 0, 0),
    (f"bytes={SIZE - 5}-", SIZE - 5, SIZE - 1),
    ("bytes=-7", SIZE - 7, SIZE - 1),
    (f"bytes=-{SIZE * 2}", 0, SIZE - 1),  # a suffix longer than the file is the whole file
    (f"bytes=100-{SIZE * 10}", 100, SIZE - 1),  # an end past the file is clamped
    ("BYTES = 3 - 4", 3, 4),  # unit case and whitespace around the numbers
])
def test_range_answers_206_with_content_range(served: tuple[LiveServer, str, bytes], spec: str, start: int,
                                              end: int) -> None:
    server, fid, content = served
    with server.client() as c:
        before = _rchar(server)
        resp = c.get(f"/v1/files/{fid}/content", headers={"Range": spec})
        read = _rchar(server) - before
    assert resp.status_code == 206, (resp.status_code, resp.headers)
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert resp.headers["content-length"] == str(end - start + 1)
    assert resp.content == content[start:end + 1]
    assert read < end - start + 1 + 512 * 1024  # the range and no more (give or take a chunk)


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_the_size(served: tuple[LiveServer, str, bytes], spec: str) -> None:
    server, fid, _ = served
    with server.client() as c:
        resp = c.get(f"/v1/files/{fid}/content", headers={"Range": spec})
    err = assert_error_shape(resp, 416)
    assert err["code"] == "range_not_satisfiable" and str(SIZE) in err["message"]
    assert resp.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=9-3", "bytes=abc", "items=0-1", "bytes=", "bytes=-"])
def test_multi_invalid_or_foreign_ranges_get_the_whole_file(served: tuple[LiveServer, str, bytes],
                                                           spec: str) -> None:
    """A server may ignore Range (RFC 9110 14.2): several ranges, a malformed one or another unit
    get a plain 200 with the whole file, never a 5xx."""
    server, fid, content = served
    with server.client() as c:
        resp = c.get(f"/v1/files/{fid}/content", headers={"Range": spec})
    assert resp.status_code == 200 and "content-range" not in resp.headers
    assert resp.content == content


def test_if_range_resumes_only_the_same_file(served: tuple[LiveServer, str, bytes]) -> None:
    server, fid, content = served
    with server.client() as c:
        etag = c.head(f"/v1/files/{fid}/content").headers["etag"]
        same = c.get(f"/v1/files/{fid}/content", headers={"Range": "bytes=5-9", "If-Range": etag})
        assert same.status_code == 206 and same.content == content[5:10]
        other = c.get(f"/v1/files/{fid}/content", headers={"Range": "bytes=5-9", "If-Range": '"file-other-1"'})
        assert other.status_code == 200 and other.content == content


def test_openai_client_downloads_whole_and_resumes_by_range(served: tuple[LiveServer, str, bytes]) -> None:
    server, fid, content = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
    assert client.files.content(fid).content == content
    # A download cut at 10 MB resumes from there: the two parts are the file.
    half = 10 * 1024 * 1024
    first = client.files.with_raw_response.content(fid, extra_headers={"Range": f"bytes=0-{half - 1}"})
    rest = client.files.with_raw_response.content(fid, extra_headers={"Range": f"bytes={half}-"})
    assert first.status_code == rest.status_code == 206
    assert first.http_response.content + rest.http_response.content == content
    with pytest.raises(openai.APIStatusError) as info:
        client.files.content(fid, extra_headers={"Range": f"bytes={SIZE}-"})
    assert info.value.status_code == 416 and info.value.code == "range_not_satisfiable"
