"""Upload -> batch -> real Engine (simulated backend) -> output files, all in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from runner.engine.file_source import FileSource, InputScan
from runner.engine.main import Engine
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


def _line(i: int, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body}


def test_completions_prompt_shapes(harness: Harness) -> None:
    prompts: list[Any] = ["once upon a time", ["a b", "c d e"], [1, 2, 3, 4], [[5, 6], [7, 8, 9]]]
    lines = [_line(i, "/v1/completions", {"model": "sim-chat", "prompt": p, "max_tokens": 5})
             for i, p in enumerate(prompts)]
    b = harness.submit(lines, "/v1/completions")
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    out, _ = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    by_id = {r["custom_id"]: r["response"]["body"] for r in out}
    assert [len(by_id[f"req-{i}"]["choices"]) for i in range(4)] == [1, 2, 1, 2]
    assert by_id["req-2"]["usage"]["prompt_tokens"] == 4
    assert by_id["req-3"]["usage"]["prompt_tokens"] == 5
    for body in by_id.values():
        assert body["object"] == "text_completion"
        assert [c["index"] for c in body["choices"]] == list(range(len(body["choices"])))
        assert all(len(c["text"].split()) <= 5 for c in body["choices"])


def test_embeddings(harness: Harness) -> None:
    inputs: list[Any] = ["hello world", ["one", "two", "three"]]
    lines = [_line(i, "/v1/embeddings", {"model": "sim-embed", "input": x}) for i, x in enumerate(inputs)]
    b = harness.submit(lines, "/v1/embeddings")
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    out, _ = check_exactly_once(harness, b, ["req-0", "req-1"])
    by_id = {r["custom_id"]: r["response"]["body"] for r in out}
    assert by_id["req-0"]["object"] == "list" and len(by_id["req-1"]["data"]) == 3
    vec = by_id["req-0"]["data"][0]["embedding"]
    assert len(vec) == 8 and abs(sum(v * v for v in vec) - 1.0) < 1e-6
    assert b["usage"]["output_tokens"] == 0 and b["usage"]["input_tokens"] > 0


def test_n_choices_stop_and_bad_lines(harness: Harness) -> None:
    lines = [chat_line(i) for i in range(10)]
    lines.append(chat_line(10, n=3, max_tokens=6))
    lines.append(chat_line(11, n=0))  # bad: n < 1
    lines.append(chat_line(12, max_tokens=-1))  # bad: negative max_tokens
    lines.append({"custom_id": "req-13", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "sim-chat"}})  # bad: no messages
    b = harness.submit(lines)
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    out, err = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert sorted(r["custom_id"] for r in err) == ["req-11", "req-12", "req-13"]
    for r in err:
        assert r["error"] is None and r["response"]["status_code"] == 400
        e = r["response"]["body"]["error"]
        assert e["type"] == "invalid_request_error" and e["message"]
    n3 = next(r for r in out if r["custom_id"] == "req-10")["response"]["body"]
    assert len(n3["choices"]) == 3 and {c["index"] for c in n3["choices"]} == {0, 1, 2}
    assert all(len(c["message"]["content"].split()) <= 6 for c in n3["choices"])
    assert b["request_counts"] == {"total": 14, "completed": 11, "failed": 3}


def test_deterministic_and_stop_strings(harness: Harness) -> None:
    lines = [chat_line(0, seed=7), chat_line(1, seed=7)]
    lines[1]["body"]["messages"] = lines[0]["body"]["messages"]
    b = harness.submit(lines)
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    out, _ = check_exactly_once(harness, b, ["req-0", "req-1"])
    texts = [r["response"]["body"]["choices"][0]["message"]["content"] for r in out]
    assert texts[0] == texts[1]
    word = texts[0].split()[1]
    b2 = harness.submit([chat_line(0, seed=7, stop=[" " + word])])
    b2 = harness.wait_status(b2["id"], "completed")
    choice = harness.rows(b2["output_file_id"])[0]["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == " " + word
    assert choice["message"]["content"] == texts[0].split()[0]


def _through(kind: str, harness: Harness, lines: list[dict[str, Any]], tmp: Path) -> tuple[list[Any], list[Any]]:
    """Run `lines` on the one engine through one of its Sources; return (output rows, error rows)."""
    if kind == "store":
        b = harness.submit(lines)
        harness.start_engine()
        b = harness.wait_status(b["id"], "completed")
        return check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    inp, out, err = tmp / "in.jsonl", tmp / "out.jsonl", tmp / "err.jsonl"
    inp.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    scan = InputScan.of(inp, harness.settings.max_line_bytes)
    source = FileSource(inp, out, err, harness.registry, scan)
    engine = Engine(harness.settings, harness.registry, source=source).start()
    try:
        assert source.ended.wait(30), "the run did not end"
    finally:
        engine.stop()
    assert engine.error is None, engine.error
    rows = [[orjson.loads(x) for x in p.read_bytes().splitlines()] for p in (out, err)]
    assert sorted(r["custom_id"] for r in rows[0] + rows[1]) == sorted(x["custom_id"] for x in lines)
    return rows[0], rows[1]


def test_same_rows_through_either_source(harness: Harness, tmp_path: Path) -> None:
    """`runner serve` (StoreSource) and `runner run` (FileSource) run one engine: the same lines
    give the same rows, error rows included (ids and timestamps aside)."""
    lines = [chat_line(i, seed=i) for i in range(30)]
    lines.append(chat_line(30, n=3, max_tokens=6))
    lines.append(chat_line(31, n=0))
    lines.append({"custom_id": "req-32", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "sim-chat"}})
    store = _through("store", harness, lines, tmp_path)
    harness.stop_engine()
    file = _through("file", harness, lines, tmp_path)
    assert sorted(r["custom_id"] for r in store[1]) == ["req-31", "req-32"]

    def shape(rows: list[Any]) -> dict[str, Any]:
        by_id = {}
        for r in rows:
            resp = r["response"]
            body = dict(resp["body"])
            body.pop("id", None)
            body.pop("created", None)
            by_id[r["custom_id"]] = (sorted(r), resp["status_code"], sorted(resp), body)
        return by_id

    for s_rows, f_rows in zip(store, file, strict=True):
        assert shape(s_rows) == shape(f_rows)
