"""validate_batch_file: one test per rule, plus the file-format tolerances and the error cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from api_helpers import CHAT, EMBED, create_unvalidated, jsonl, line, run_batch, upload_ok, wait_status
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.model_specs import ModelRegistry, parse_model_specs
from runner.settings import Settings
from runner.validation import ValidationResult, validate_batch_file


def _validate(tmp_path: Path, registry: ModelRegistry, content: bytes, *, endpoint: str = CHAT,
              max_lines: int = 50_000, max_errors: int = 100, max_line_bytes: int = 1024 * 1024) -> ValidationResult:
    p = tmp_path / "in.jsonl"
    p.write_bytes(content)
    return validate_batch_file(p, endpoint=endpoint, models=registry, max_lines=max_lines,
                               max_line_bytes=max_line_bytes, max_errors=max_errors)


def _only(res: ValidationResult) -> dict[str, Any]:
    assert not res.ok
    assert len(res.errors) == 1, res.errors
    return res.errors[0]


@pytest.fixture
def v(tmp_path: Path, registry: ModelRegistry) -> Any:
    def run(content: bytes, **kw: Any) -> ValidationResult:
        return _validate(tmp_path, registry, content, **kw)
    return run


def test_a_good_file_passes(v: Any) -> None:
    res = v(jsonl(line("a"), line("b")))
    assert res.ok and res.total == 2 and res.model == "sim-chat" and res.errors == []


def test_invalid_json(v: Any) -> None:
    e = _only(v(jsonl(line("a"), b'{"custom_id": "b",')))
    assert (e["code"], e["line"], e["param"]) == ("invalid_json", 2, None)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_line_must_be_an_object(v: Any, raw: bytes) -> None:
    e = _only(v(jsonl(raw)))
    assert (e["code"], e["line"]) == ("invalid_request", 1)


def test_custom_id_present(v: Any) -> None:
    row = line()
    del row["custom_id"]
    e = _only(v(jsonl(row)))
    assert (e["code"], e["line"], e["param"]) == ("missing_custom_id", 1, "custom_id")


@pytest.mark.parametrize("cid", [5, None, "", ["a"], {"a": 1}])
def test_custom_id_is_a_non_empty_string(v: Any, cid: Any) -> None:
    row = line()
    row["custom_id"] = cid
    e = _only(v(jsonl(row)))
    assert (e["code"], e["param"]) == ("invalid_custom_id", "custom_id")


def test_custom_id_unique(v: Any) -> None:
    e = _only(v(jsonl(line("a"), line("b"), line("a"))))
    assert (e["code"], e["line"], e["param"]) == ("duplicate_custom_id", 3, "custom_id")
    assert "duplicate of another request" in e["message"]


@pytest.mark.parametrize("method", ["GET", "post", None, 1])
def test_method_post(v: Any, method: Any) -> None:
    row = line()
    row["method"] = method
    e = _only(v(jsonl(row)))
    assert (e["code"], e["param"]) == ("invalid_method", "method")


def test_method_missing(v: Any) -> None:
    row = line()
    del row["method"]
    assert _only(v(jsonl(row)))["code"] == "invalid_method"


def test_url_equals_endpoint(v: Any) -> None:
    e = _only(v(jsonl(line(url="/v1/completions")), endpoint=CHAT))
    assert (e["code"], e["param"], e["line"]) == ("mismatched_url", "url", 1)


def test_url_unsupported(v: Any) -> None:
    e = _only(v(jsonl(line(url="/v1/moderations"))))
    assert (e["code"], e["param"]) == ("invalid_url", "url")


def test_url_missing(v: Any) -> None:
    row = line()
    del row["url"]
    assert _only(v(jsonl(row)))["code"] == "missing_url"


@pytest.mark.parametrize("body", [None, "text", [1], 3])
def test_body_is_an_object(v: Any, body: Any) -> None:
    row = line()
    row["body"] = body
    e = _only(v(jsonl(row)))
    assert (e["code"], e["param"]) == ("invalid_body", "body")


def test_body_missing(v: Any) -> None:
    row = line()
    del row["body"]
    assert _only(v(jsonl(row)))["code"] == "invalid_body"


@pytest.mark.parametrize("model", [None, "", 7])
def test_model_required(v: Any, model: Any) -> None:
    row = line()
    row["body"]["model"] = model
    e = _only(v(jsonl(row)))
    assert (e["code"], e["param"]) == ("missing_model", "body.model")


def test_model_known(v: Any) -> None:
    e = _only(v(jsonl(line(model="gpt-4o"))))
    assert (e["code"], e["param"], e["line"]) == ("model_not_found", "body.model", 1)
    assert "sim-chat" in e["message"]  # names the models there are


def test_model_serves_the_endpoint(v: Any) -> None:
    e = _only(v(jsonl(line(model="sim-embed")), endpoint=CHAT))
    assert (e["code"], e["param"]) == ("model_endpoint_mismatch", "body.model")
    e = _only(v(jsonl(line(model="sim-chat", url=EMBED)), endpoint=EMBED))
    assert e["code"] == "model_endpoint_mismatch"


def test_one_model_per_file(tmp_path: Path) -> None:
    two = parse_model_specs({"models": [{"id": "m1", "backend": "simulated"}, {"id": "m2", "backend": "simulated"}]})
    res = _validate(tmp_path, two, jsonl(line("a", model="m1"), line("b", model="m1"), line("c", model="m2")))
    e = _only(res)
    assert (e["code"], e["line"], e["param"]) == ("mixed_models", 3, "body.model")
    assert "line 1" in e["message"]


@pytest.mark.parametrize("stream", [True, "yes", 1])
def test_no_stream_true(v: Any, stream: Any) -> None:
    e = _only(v(jsonl(line(stream=stream))))
    assert (e["code"], e["param"]) == ("stream_unsupported", "body.stream")


def test_stream_false_is_fine(v: Any) -> None:
    assert v(jsonl(line(stream=False))).ok


def test_max_lines(v: Any) -> None:
    assert v(jsonl(line("a"), line("b"), line("c")), max_lines=3).ok
    e = _only(v(jsonl(line("a"), line("b"), line("c"), line("d")), max_lines=3))
    assert (e["code"], e["line"]) == ("too_many_requests", 4)


def test_empty_file(v: Any) -> None:
    e = _only(v(b""))
    assert (e["code"], e["line"], e["param"]) == ("empty_file", None, "input_file_id")


def test_only_blank_lines_is_empty(v: Any) -> None:
    assert _only(v(b"\n\n  \r\n\t\n"))["code"] == "empty_file"


def test_bom_only_is_empty(v: Any) -> None:
    assert _only(v(b"\xef\xbb\xbf\n"))["code"] == "empty_file"


def test_crlf_line_endings(v: Any) -> None:
    res = v(jsonl(line("a"), line("b")).replace(b"\n", b"\r\n"))
    assert res.ok and res.total == 2


def test_utf8_bom(v: Any) -> None:
    res = v(b"\xef\xbb\xbf" + jsonl(line("a"), line("b")))
    assert res.ok and res.total == 2


def test_missing_final_newline(v: Any) -> None:
    res = v(jsonl(line("a"), line("b")).rstrip(b"\n"))
    assert res.ok and res.total == 2


def test_blank_lines_are_skipped_but_counted_for_line_numbers(v: Any) -> None:
    res = v(jsonl(line("a"), b"", b"   ", b"{bad"))
    e = _only(res)
    assert (e["code"], e["line"]) == ("invalid_json", 4)


def test_invalid_utf8_names_the_line(v: Any) -> None:
    bad = orjson.dumps(line("b")).replace(b"hi", b"h\xff\xfe")
    e = _only(v(jsonl(line("a"), bad, line("c"))))
    assert (e["code"], e["line"]) == ("invalid_utf8", 2)
    assert "Line 2" in e["message"]


def test_non_ascii_utf8_is_fine(v: Any) -> None:
    assert v(jsonl(line("ünïcødé ✓", messages=[{"role": "user", "content": "日本語"}]))).ok


def test_line_too_long(v: Any) -> None:
    long = line("b", messages=[{"role": "user", "content": "x" * 2000}])
    e = _only(v(jsonl(line("a"), long, line("c")), max_line_bytes=1000))
    assert (e["code"], e["line"]) == ("line_too_long", 2)


def test_every_problem_is_listed_with_its_line(v: Any) -> None:
    rows = [line("a"), b"{", line("a"), line("c", url="/v1/completions"), line("d", model="nope")]
    res = v(jsonl(*rows))
    assert [(e["code"], e["line"]) for e in res.errors] == [
        ("invalid_json", 2), ("duplicate_custom_id", 3), ("mismatched_url", 4), ("model_not_found", 5)]


def test_several_problems_on_one_line_are_all_listed(v: Any) -> None:
    row = {"custom_id": 1, "method": "GET", "url": "/v1/completions", "body": {"model": "sim-chat", "stream": True}}
    codes = {e["code"] for e in v(jsonl(row)).errors}
    assert codes == {"invalid_custom_id", "invalid_method", "mismatched_url", "stream_unsupported"}


def test_error_cap_adds_too_many_errors(v: Any) -> None:
    res = v(jsonl(*[b"{" for _ in range(8)]), max_errors=5)
    assert res.error_count == 8
    assert len(res.errors) == 6
    assert [e["line"] for e in res.errors[:5]] == [1, 2, 3, 4, 5]
    extra = res.errors[5]
    assert extra["code"] == "too_many_errors" and extra["line"] is None and extra["param"] is None
    assert "3 more" in extra["message"]


def test_error_cap_not_reached_adds_nothing(v: Any) -> None:
    res = v(jsonl(*[b"{" for _ in range(5)]), max_errors=5)
    assert len(res.errors) == 5 and all(e["code"] == "invalid_json" for e in res.errors)


def test_unreadable_file(registry: ModelRegistry, tmp_path: Path) -> None:
    res = validate_batch_file(tmp_path / "gone.jsonl", endpoint=CHAT, models=registry, max_lines=10,
                              max_line_bytes=100)
    assert _only(res)["code"] == "file_unreadable"


# -- the same rules through the API, with the limits taken from Settings --------------------------------------
def test_settings_limits_reach_validation(settings: Settings, registry: ModelRegistry) -> None:
    small = settings.replace(max_batch_lines=2, max_batch_errors=2)
    with TestClient(create_app(small, registry)) as c:
        assert run_batch(c, jsonl(line("a"), line("b")))["status"] == "in_progress"
        b = run_batch(c, jsonl(line("a"), line("b"), line("c")))
        assert b["status"] == "failed"
        assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [("too_many_requests", 3)]
        b = run_batch(c, jsonl(b"{", b"{", b"{", b"{"))
        assert [e["code"] for e in b["errors"]["data"]] == ["invalid_json", "invalid_json", "too_many_errors"]


def test_failed_batch_reports_model_when_known(client: TestClient) -> None:
    b = run_batch(client, jsonl(line("a"), line("a")))
    assert b["status"] == "failed" and b["model"] == "sim-chat"
    assert b["errors"]["data"][0]["param"] == "custom_id"


def test_failed_validation_of_an_empty_upload(client: TestClient) -> None:
    b = run_batch(client, b"")
    assert b["status"] == "failed"
    assert b["errors"]["data"] == [{"code": "empty_file", "message": "The input file has no requests.",
                                    "param": "input_file_id", "line": None}]


def test_input_file_gone_before_validation(client: TestClient) -> None:
    svc = client.app.state.services  # type: ignore[attr-defined]
    fid = upload_ok(client, jsonl(line()))["id"]
    bid = create_unvalidated(client, fid)["id"]
    svc.files.path_of(fid).unlink()
    svc.submit_validation(bid)
    b = wait_status(client, bid)
    # gone is file_not_found, as when the engine finds it gone (#14); file_unreadable is an I/O error
    assert b["status"] == "failed" and b["errors"]["data"][0]["code"] == "file_not_found"
