"""Object ids in OpenAI's shapes: file-…, batch_…, batch_req_…, req_…."""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Callable

_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
# Random bytes -> id characters in one C call. 256 is not a multiple of 36, so a..d come up 8/7 as
# often as the rest: 24 characters still carry ~124 bits, far past any chance of a collision.
_TABLE = bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256))


def _token(n: int = 24, source: Callable[[int], bytes] = secrets.token_bytes) -> str:
    return source(n).translate(_TABLE).decode("ascii")


def new_file_id() -> str:
    return "file-" + _token()


def new_batch_id() -> str:
    return "batch_" + _token()


def new_event_id() -> str:
    return "evt_" + _token()


def new_webhook_endpoint_id() -> str:
    return "we_" + _token()


# Row and request ids are labels, not capabilities (every lookup is by file or batch id and owner),
# and the engine makes two per output row: they come from the process's PRNG, which is reseeded
# after fork, instead of a getrandom() syscall each (a syscall releases the GIL, and the writer
# thread then waits up to a switch interval to get it back).
def new_line_id() -> str:
    return "batch_req_" + _token(source=random.randbytes)


def new_request_id() -> str:
    return "req_" + _token(source=random.randbytes)


_ID_RE = re.compile(r"^(file-|batch_)[a-z0-9]{1,64}$")


def looks_like_id(value: str) -> bool:
    """True when `value` could be one of our ids; anything else is answered 404 without a lookup."""
    return bool(_ID_RE.match(value))
