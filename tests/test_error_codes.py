"""runner/error_codes.py is the one list of error codes: every code the source uses is listed
there, and every code listed is used (so a condition cannot quietly get a second code)."""

from __future__ import annotations

import re
from pathlib import Path

from runner.error_codes import CODES

SOURCE = Path(__file__).resolve().parents[1] / "runner"
# The places a code is written: code="x" / code = "x", validation's c.add("x", ...), a dict's
# "code": "x", openai_error_body(...)/error_result(...)/_fail(...)'s last argument, the
# cancel/expiry reasons ("batch_..."), and the 404/405 route map of api/app.py.
PATTERNS = [
    r'code\s*=\s*"([a-z_]+)"',
    r'\.add\(\s*"([a-z_]+)"',
    r'"code":\s*"([a-z_]+)"',
    r'(?:openai_error_body|error_result|_fail)\((?:[^()]|\([^()]*\))*?,\s*"([a-z_]+)"\)',
    r'\(\s*"(batch_(?:cancelled|expired))"',
    r'\d{3}:\s*"([a-z_]+)"',
    r'MODEL_ENDPOINT_MISMATCH\s*=\s*"([a-z_]+)"',
]


def _used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        if path.name == "error_codes.py":
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in PATTERNS:
            for m in re.finditer(pattern, text, flags=re.S):
                used.setdefault(m.group(1), set()).add(str(path.relative_to(SOURCE)))
    return used


def test_every_code_used_is_listed() -> None:
    unlisted = {code: sorted(where) for code, where in _used().items() if code not in CODES}
    assert unlisted == {}, "add these to runner/error_codes.py (or use the code already listed for the condition)"


def test_every_code_listed_is_used() -> None:
    assert sorted(set(CODES) - set(_used())) == []


def test_the_scan_finds_codes_in_each_form() -> None:
    used = _used()
    for code in ("invalid_api_key", "missing_custom_id", "file_not_found", "engine_error", "batch_cancelled",
                 "method_not_allowed", "model_load_failed", "model_endpoint_mismatch"):
        assert code in used, code
