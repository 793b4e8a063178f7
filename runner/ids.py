"""Object ids in OpenAI's shapes: file-…, batch_…, batch_req_…, req_…."""

from __future__ import annotations

import re
import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _token(n: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_file_id() -> str:
    return "file-" + _token()


def new_batch_id() -> str:
    return "batch_" + _token()


def new_line_id() -> str:
    return "batch_req_" + _token()


def new_request_id() -> str:
    return "req_" + _token()


_ID_RE = re.compile(r"^(file-|batch_)[a-z0-9]{1,64}$")


def looks_like_id(value: str) -> bool:
    """True when `value` could be one of our ids; anything else is answered 404 without a lookup."""
    return bool(_ID_RE.match(value))
