"""The batch status machine of the contract; every status change goes through check_transition."""

from __future__ import annotations

from runner.errors import Conflict

ALLOWED: dict[str, frozenset[str]] = {
    "validating": frozenset({"in_progress", "failed", "cancelling"}),
    # in_progress -> failed is runner's own (#14): the batch's input file was found damaged or gone
    # while it ran; OpenAI fails a batch only in validation.
    "in_progress": frozenset({"finalizing", "expired", "cancelling", "failed"}),
    "finalizing": frozenset({"completed"}),
    "cancelling": frozenset({"cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
    "cancelled": frozenset(),
}
TERMINAL = frozenset(s for s, nxt in ALLOWED.items() if not nxt)
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# The column stamped when a batch enters each status.
STAMP = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


def check_transition(current: str, new: str, batch_id: str = "") -> None:
    if new not in ALLOWED.get(current, frozenset()):
        raise Conflict(
            f"Batch {batch_id} cannot move from status '{current}' to '{new}'.".replace("  ", " "),
            code="invalid_status_transition",
        )
