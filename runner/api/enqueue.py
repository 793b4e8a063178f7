"""What a validated batch must pass before it starts (#16): its key's enqueued caps and its deadline.

Both are asked at the end of validation, inside the transaction that starts the batch
(BatchStore.start's gate), so what they count cannot change under them: two batches of one key
validated at once are serialised by SQLite's write lock, and the second sees the first.

Caps. A key's enqueued lines and tokens are the totals of its batches in validating, in_progress,
finalizing or cancelling, this one included; a batch that ends stops counting, which releases its
share. RUNNER_MAX_ENQUEUED_LINES / RUNNER_MAX_ENQUEUED_TOKENS cap every key (0 = no cap) and
RUNNER_KEY_LIMITS overrides them per key. Over a cap the batch fails with `token_limit_exceeded`
(OpenAI's code for its enqueued-token limit, used here for lines too). Tokens are estimated
(runner/input_tokens.py).

Deadline. The model's measured lines/s (store/stats.py model_rate: its running batches' live rates,
else its recent finished batches) against the lines ahead: the unanswered lines of its running
batches plus this batch's. If they need longer than the window has left, RUNNER_DEADLINE_POLICY
`flag` starts the batch with a `deadline_at_risk` notice in its `errors` (status in_progress as
usual), `refuse` fails it with `deadline_unreachable`. The estimate is pessimistic for a short
window: fair sharing gives a batch near its deadline more than its plain share (docs/ENGINE_DESIGN.md).
Nothing measured yet (a model's first batch): no check.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from runner.api.auth import owner_of_key
from runner.settings import Settings
from runner.store.batches import Gate, enqueued, lines_ahead
from runner.store.stats import model_rate


def caps(settings: Settings, owner: str) -> tuple[int, int]:
    """(lines cap, tokens cap) of the owner; 0 = none."""
    lines, tokens = settings.max_enqueued_lines, settings.max_enqueued_tokens
    for key, key_lines, key_tokens in settings.key_limits:
        if owner_of_key(key) == owner:
            lines = lines if key_lines is None else key_lines
            tokens = tokens if key_tokens is None else key_tokens
    return lines, tokens


def _over_cap(conn: sqlite3.Connection, settings: Settings, owner: str, total: int,
              tokens: int) -> dict[str, Any] | None:
    cap_lines, cap_tokens = caps(settings, owner)
    if not cap_lines and not cap_tokens:
        return None
    have_lines, have_tokens = enqueued(conn, owner)
    for what, have, mine, cap in (("lines", have_lines, total, cap_lines),
                                  ("tokens", have_tokens, tokens, cap_tokens)):
        if cap and have + mine > cap:
            est = " (estimated: UTF-8 bytes of the prompts / 4)" if what == "tokens" else ""
            return {"code": "token_limit_exceeded", "param": None, "line": None,
                    "message": f"Enqueued {what} limit reached for this key: this batch has {mine:,} {what}{est} "
                               f"and {have:,} are already enqueued, over the limit of {cap:,}. Wait for a "
                               "batch to end, or submit a smaller one."}
    return None


def _late(conn: sqlite3.Connection, settings: Settings, model: str, total: int, window: str,
          expires_at: int) -> dict[str, Any] | None:
    now = time.time()
    rate = model_rate(conn, model, now) if expires_at else None
    if rate is None:
        return None
    ahead = lines_ahead(conn, model) + total
    need, left = ahead / rate, expires_at - now
    if need <= left:
        return None
    refuse = settings.deadline_policy == "refuse"
    then = ("It was refused (RUNNER_DEADLINE_POLICY=refuse)." if refuse else
            "It runs anyway; lines not done by expires_at end as batch_expired.")
    return {"code": "deadline_unreachable" if refuse else "deadline_at_risk", "param": "completion_window",
            "line": None,
            "message": f"At the measured {rate:.3g} lines/s of {model!r}, the {ahead:,} lines ahead (this batch's "
                       f"{total:,} included) need about {need:,.0f} s; the {window!r} window has {left:,.0f} s "
                       f"left. {then}"}


def gate(settings: Settings, *, owner: str, model: str, total: int, tokens: int, window: str,
         expires_at: int) -> Gate:
    """BatchStore.start's gate for one batch: (errors that fail it, or None; notices it starts with)."""

    def check(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
        over = _over_cap(conn, settings, owner, total, tokens)
        if over is not None:
            return [over], []
        late = _late(conn, settings, model, total, window, expires_at)
        if late is None:
            return None, []
        return ([late], []) if late["code"] == "deadline_unreachable" else (None, [late])

    return check
