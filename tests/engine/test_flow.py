"""Upload -> batch -> real Engine (simulated backend) -> output files, all in one process."""

from __future__ import annotations

from tests.engine.conftest import Harness, chat_line, check_exactly_once


def test_chat_batch_completes(harness: Harness) -> None:
    lines = [chat_line(i) for i in range(50)]
    b = harness.submit(lines)
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    out, err = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert len(out) == 50 and not err
    body = out[0]["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert b["usage"]["output_tokens"] == sum(r["response"]["body"]["usage"]["completion_tokens"] for r in out)
    assert b["finalizing_at"] is not None and b["completed_at"] is not None
