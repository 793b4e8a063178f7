"""Every error code is classified: either its message can carry a client's value, and then a case
below produces it with a value of about 1 MB and the message (and `param`) stay short, with the
value clipped by runner.errors.clip; or it carries none, and it is listed in NO_CLIENT_VALUE.
A code added to runner/error_codes.py fails test_every_code_is_classified until it is put in one
of the two (#14: validation messages echoed values in full; one GET of a batch returned 82 MB).

Each case runs the real code path in process: validation on a file, a backend's add() on a line,
the app through Starlette's TestClient. The live-server version is tests/reliability/test_echo_bounds.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.engine.backend import LineRequest
from runner.engine.content_parts import check_text_only
from runner.engine.responses_api import ResponsesAdapter
from runner.engine.simulated import SimulatedBackend
from runner.error_codes import CODES
from runner.errors import ECHO_LIMIT, LineError, clip, endpoint_mismatch
from runner.model_specs import ModelSpec, parse_model_specs
from runner.settings import Settings
from runner.validation import validate_batch_file

N = 1_000_000
BIG = "x" * N
MESSAGE_BOUND = 400  # a message with up to two clipped values and runner's own words
PARAM_BOUND = 2 * ECHO_LIMIT
CHAT, EMBED, RESPONSES = "/v1/chat/completions", "/v1/embeddings", "/v1/responses"

# Codes whose message carries no value of the client's: fixed text, numbers runner counts, limits
# it sets, ids it made, or server-side text (a library's, capped by the renderer at MESSAGE_LIMIT).
NO_CLIENT_VALUE = {
    "missing_api_key", "invalid_api_key", "permission_denied", "conflict", "invalid_status_transition",
    "batch_not_cancellable", "file_in_use", "file_too_large", "body_too_large", "rate_limit_exceeded",
    "service_unavailable", "shutting_down", "disk_full", "database_busy", "internal_error",
    "range_not_satisfiable",  # names the file's size, never the Range header
    "missing_required_parameter", "invalid_metadata", "invalid_content_type", "missing_file",
    "missing_purpose", "invalid_file_purpose", "invalid_completion_window",
    "empty_file", "too_many_requests", "file_unreadable", "file_not_found", "file_damaged", "too_many_errors",
    "line_too_long", "invalid_request", "missing_custom_id", "invalid_custom_id", "missing_url", "invalid_body",
    "missing_model", "stream_unsupported",
    # orjson's message gives a position, never the text; a line's url matching another batch
    # endpoint is one of runner's own endpoints
    "invalid_json", "mismatched_url",
    "context_length_exceeded", "chat_template_missing", "model_not_loaded", "engine_error", "batch_cancelled",
    "batch_expired", "model_load_failed", "model_unhealthy",
    "engine_frozen", "engine_crash_loop", "engine_no_progress", "engine_waiting_for_lock",
    "request_header_too_large", "request_timeout", "duplicate_authorization", "too_many_uploads",
    "too_many_connections",
    # runner's own limit; a test send's failure is the socket library's text (clipped)
    "too_many_webhook_endpoints", "webhook_unreachable",
    # numbers runner counts, a model and a window validation accepted; the in-use answer names no key
    "token_limit_exceeded", "deadline_at_risk", "deadline_unreachable", "idempotency_key_in_use",
}

# -- producers: each returns the error as a client sees it ({message, param, code}) ----------------------

SIM = {"models": [{"id": "sim-chat", "backend": "simulated", "task": "generate", "max_tokens": 32},
                  {"id": "sim-embed", "backend": "simulated", "task": "embed"}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("echo") / "data"), engine=False, sweep_interval=3600.0,
                        rate_limit=0.0)
    with TestClient(create_app(settings, parse_model_specs(SIM)), raise_server_exceptions=False) as c:
        yield c


Case = Callable[[TestClient, Path], dict[str, Any]]


def _http(method: str, path: str, **kw: Any) -> Case:
    def run(c: TestClient, _: Path) -> dict[str, Any]:
        r = c.request(method, path, **kw)
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        err: dict[str, Any] = r.json()["error"]
        return err
    return run


def _upload(data: dict[str, Any], files: dict[str, Any] | None = None) -> Case:
    return _http("POST", "/v1/files", data=data, files=files or {"file": ("a.jsonl", b"{}\n")})


def _multipart(raw: bytes) -> Case:
    return _http("POST", "/v1/files", content=raw, headers={"content-type": "multipart/form-data; boundary=b"})


def _create(**body: Any) -> Case:
    return _http("POST", "/v1/batches", json={"input_file_id": "file-abc", "endpoint": CHAT, **body})


def _reused_key() -> Case:
    """The same (longest valid) Idempotency-Key with another body: the 422 names the key, clipped."""
    key = "k" * 255

    def run(c: TestClient, _: Path) -> dict[str, Any]:
        first = c.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a.jsonl", b"{}\n")},
                       headers={"Idempotency-Key": key})
        assert first.status_code == 200, first.text[:300]
        r = c.post("/v1/files", data={"purpose": "batch"}, files={"file": ("b.jsonl", b"{}\n")},
                   headers={"Idempotency-Key": key})
        assert r.status_code == 422, (r.status_code, r.text[:300])
        err: dict[str, Any] = r.json()["error"]
        return err
    return run


J = "x" * 400_000  # a JSON request body is capped at 1 MiB
U = "x" * 60_000  # as much as a URL or a form field's value may carry
F = "x" * 4000  # a form field's name: python-multipart caps a part's headers at 4 KiB


def _lines(*rows: Any, endpoint: str = CHAT, registry: dict[str, Any] = SIM) -> Case:
    def run(_: TestClient, tmp: Path) -> dict[str, Any]:
        p = tmp / "in.jsonl"
        p.write_bytes(b"".join(r if isinstance(r, bytes) else orjson.dumps(r) + b"\n" for r in rows))
        res = validate_batch_file(p, endpoint=endpoint, models=parse_model_specs(registry), max_lines=100,
                                  max_line_bytes=4 * N)
        assert len(res.errors) == 1, [e["code"] for e in res.errors]
        return res.errors[0]
    return run


def _line(cid: str = "a", model: str = "sim-chat", url: str = CHAT, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}}


def _backend(endpoint: str, body: dict[str, Any], spec: ModelSpec | None = None) -> Case:
    def run(_: TestClient, __: Path) -> dict[str, Any]:
        backend = ResponsesAdapter(SimulatedBackend(spec or ModelSpec(id="sim-chat", backend="simulated")))
        with pytest.raises(LineError) as ei:
            backend.add(LineRequest(key="b:1", batch_id="b", custom_id="c", endpoint=endpoint, body=body))
        err: dict[str, Any] = ei.value.body()["error"]
        return err
    return run


def _chat(**body: Any) -> Case:
    return _backend(CHAT, {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], **body})


def _responses(**body: Any) -> Case:
    return _backend(RESPONSES, {"model": "sim-chat", "input": "hi", **body})


def _raised(make: Callable[[], LineError]) -> Case:
    def run(_: TestClient, __: Path) -> dict[str, Any]:
        try:
            error = make()
        except LineError as exc:
            error = exc
        body: dict[str, Any] = error.body()["error"]
        return body
    return run


BIG_REGISTRY = {"models": [{"id": "a" + BIG, "backend": "simulated", "task": "generate"},
                           {"id": "b" + BIG, "backend": "simulated", "task": "generate"}]}

ECHOES: dict[str, list[Case]] = {
    "not_found": [_http("GET", f"/v1/batches/batch_{U}"), _http("GET", f"/v1/files/file-{U}"),
                  _create(input_file_id="file-" + J)],
    "unknown_url": [_http("GET", f"/v1/{U}")],
    "method_not_allowed": [_http("PUT", f"/v1/files/file-{U}")],
    "invalid_utf8": [_multipart(b'--b\r\nContent-Disposition: form-data; name="' + F.encode() + b'"\r\n\r\n\xff\xfe'
                                b'\r\n--b--\r\n')],
    "invalid_value": [_http("GET", "/v1/files", params={"order": U}), _chat(temperature=BIG), _chat(top_p=[BIG]),
                      _chat(logit_bias={BIG: 1}), _chat(messages=[{"role": BIG, "content": "hi"}]),
                      _chat(tools=[{"type": "function", "function": {"name": "f"}}],
                            tool_choice={"type": "function", "function": {"name": BIG}}),
                      _backend(EMBED, {"model": "e", "input": "x", "encoding_format": BIG},
                               ModelSpec(id="e", backend="simulated", task="embed")),
                      _http("POST", "/v1/webhook_endpoints", json={"name": "n", "url": "http://h/",
                                                                   "event_types": [J]}),
                      _responses(include=[BIG]), _responses(input=[{"type": "message", "role": BIG, "content": "hi"}]),
                      _responses(reasoning={"effort": BIG}), _responses(max_output_tokens=BIG),
                      _chat(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {
                          "type": "object", "properties": {"a": {"type": "string"}}, "required": [BIG],
                          "additionalProperties": False}}})],
    "unknown_parameter": [_create(**{J: 1}), _create(**{J: 1, "y" + J[1:]: 2}),
                          _create(output_expires_after={J: 1}), _upload({"purpose": "batch", F: "v"}),
                          _chat(**{BIG: 1}), _responses(**{BIG: 1}), _responses(reasoning={BIG: 1})],
    "invalid_multipart": [_upload({"purpose": "batch"}, files={F: ("a.jsonl", b"{}\n")}),
                          _multipart(b'--b\r\nContent-Disposition: form-data; name="' + F.encode() + b'"\r\n\r\n'
                                     + b"v" * (1 << 17) + b"\r\n--b--\r\n")],
    "invalid_purpose": [_upload({"purpose": U})],
    "invalid_endpoint": [_create(endpoint="/v1/" + J)],
    "invalid_idempotency_key": [_http("POST", "/v1/batches", json={"input_file_id": "file-abc", "endpoint": CHAT},
                                      headers={"Idempotency-Key": "k" * 60_000})],
    "idempotency_key_reused": [_reused_key()],
    "invalid_webhook_url": [_http("POST", "/v1/webhook_endpoints", json={"name": "n", "url": "https://" + J,
                                                                         "event_types": ["batch.completed"]}),
                            _http("POST", "/v1/webhook_endpoints", json={"name": "n", "url": "ftp://h/" + U,
                                                                         "event_types": ["batch.completed"]})],
    "duplicate_custom_id": [_lines(_line(BIG), _line(BIG))],
    "invalid_method": [_lines({**_line(), "method": BIG}), _lines({**_line(), "method": [BIG, BIG]})],
    "invalid_url": [_lines({**_line(), "url": BIG})],
    "mixed_models": [_lines(_line(model="a" + BIG), _line("b", model="b" + BIG), registry=BIG_REGISTRY)],
    "model_not_found": [_lines(_line(model=BIG))],
    "model_endpoint_mismatch": [_lines(_line(model="a" + BIG, url=EMBED), endpoint=EMBED, registry=BIG_REGISTRY),
                                _raised(lambda: endpoint_mismatch(BIG, EMBED, (CHAT,)))],
    "model_not_multimodal": [_raised(lambda: check_text_only(BIG, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": BIG}}]}]) or LineError("not raised"))],
    "unsupported_parameter": [_chat(messages=[{"role": "user", "content": [{"type": BIG, "text": "x"}]}]),
                              _responses(input=[{"type": BIG}]), _responses(tools=[{"type": BIG}]),
                              _responses(input=[{"role": "user", "content": [{"type": BIG, "text": "x"}]}])],
}
CASES = [pytest.param(code, i, id=f"{code}-{i}") for code, cases in ECHOES.items() for i in range(len(cases))]


def test_every_code_is_classified() -> None:
    unclassified = sorted(set(CODES) - set(ECHOES) - NO_CLIENT_VALUE)
    assert unclassified == [], "add a case to ECHOES (its message echoes a client value) or list it in NO_CLIENT_VALUE"
    assert set(ECHOES) & NO_CLIENT_VALUE == set()
    assert sorted(set(ECHOES) - set(CODES)) == [], "ECHOES names codes runner/error_codes.py does not list"


@pytest.mark.parametrize(("code", "i"), CASES)
def test_echoed_values_are_clipped(code: str, i: int, api: TestClient, tmp_path: Path) -> None:
    err = ECHOES[code][i](api, tmp_path)
    assert err["code"] == code, err
    assert len(err["message"]) <= MESSAGE_BOUND, (len(err["message"]), err["message"][:300])
    assert err["param"] is None or len(err["param"]) <= PARAM_BOUND, len(err["param"])
    # the value is there, clipped (a case that missed the echo would not show the marker)
    assert "…" in err["message"] + (err["param"] or ""), err


def test_clip() -> None:
    assert clip("abc") == "abc" and clip("abc", quote=True) == "'abc'"
    assert clip("x" * 150) == "x" * 100 + "…(+50 chars)"
    assert clip("x" * 150, quote=True) == "'" + "x" * 100 + "'…(+50 chars)"
    assert clip(5) == "5" and clip(None) == "None"
    nested: Any = [BIG]
    for _ in range(5000):  # deeper than repr's recursion limit: reprlib stops at 3 levels
        nested = [nested]
    assert len(clip(nested)) <= ECHO_LIMIT + 1
    assert len(clip(list(range(N)))) <= ECHO_LIMIT + 1
