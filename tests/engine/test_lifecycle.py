"""Cancel, expiry, live progress, restart and model switching, with a real Engine in process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.engine.main import Engine
from runner.model_specs import ModelRegistry, parse_model_specs
from runner.settings import Settings
from tests.engine.conftest import MODELS, Harness, chat_line, check_exactly_once


def _slow(n: int, model: str = "sim-slow") -> list[dict]:
    return [chat_line(i, model=model, max_tokens=20) for i in range(n)]


def test_live_counts_and_content_while_running(harness: Harness) -> None:
    lines = _slow(100)
    b = harness.submit(lines)
    harness.start_engine()
    mid = harness.wait(b["id"], lambda x: 10 <= x["request_counts"]["completed"] < 90)
    assert mid["status"] == "in_progress"
    rows = harness.rows(mid["output_file_id"])  # only whole, checkpointed rows
    assert len(rows) >= mid["request_counts"]["completed"] and len(rows) < 100
    assert mid["usage"]["output_tokens"] > 0
    done = harness.wait_status(b["id"], "completed")
    check_exactly_once(harness, done, [x["custom_id"] for x in lines])


def test_cancel_mid_run(harness: Harness) -> None:
    lines = _slow(200)
    b = harness.submit(lines)
    harness.start_engine()
    harness.wait(b["id"], lambda x: x["request_counts"]["completed"] >= 5)
    r = harness.client.post(f"/v1/batches/{b['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    b = harness.wait_status(b["id"], "cancelled", timeout=10)
    out, err = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert 5 <= len(out) < 200
    cancelled = [r for r in err if r["error"] is not None]
    assert cancelled and all(r["error"]["code"] == "batch_cancelled" and r["response"] is None for r in cancelled)
    assert b["cancelled_at"] is not None


def test_cancel_while_validating_ends_cancelled(harness: Harness, settings: Settings) -> None:
    engine = harness.start_engine()
    store = engine.source.store  # type: ignore[attr-defined]
    f = harness.client.post("/v1/files", data={"purpose": "batch"},
                            files={"file": ("x.jsonl", b'{"custom_id":"a"}\n')}).json()
    now = int(time.time())
    store.create(batch_id="batch_validating1", owner="local", endpoint="/v1/chat/completions",
                 input_file_id=f["id"], completion_window="24h", metadata=None, output_expires_seconds=None,
                 now=now, expires_at=now + 60)
    store.request_cancel("local", "batch_validating1", now)
    b = harness.wait_status("batch_validating1", "cancelled", timeout=10)
    assert b["output_file_id"] is None and b["request_counts"]["total"] == 0


def test_expiry(tmp_path: Path, registry: ModelRegistry) -> None:
    settings = Settings(data_dir=str(tmp_path / "d"), engine=False, sweep_interval=3600.0,
                        checkpoint_interval=0.05, poll_interval=0.05, completion_window_seconds=1)
    with TestClient(create_app(settings, registry)) as client:
        h = Harness(client, settings, registry)
        lines = _slow(300)
        b = h.submit(lines)
        h.start_engine()
        try:
            b = h.wait_status(b["id"], "expired", timeout=15)
            out, err = check_exactly_once(h, b, [x["custom_id"] for x in lines])
            assert len(out) < 300
            assert all(r["error"]["code"] == "batch_expired" for r in err)
            assert b["expired_at"] is not None
        finally:
            h.stop_engine()


def test_restart_resumes_exactly_once(harness: Harness) -> None:
    lines = _slow(150)
    b = harness.submit(lines)
    for _ in range(3):
        harness.start_engine()
        harness.wait(b["id"], lambda x: x["request_counts"]["completed"] > 0 or x["status"] == "completed")
        time.sleep(0.3)
        harness.stop_engine()
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed")
    check_exactly_once(harness, b, [x["custom_id"] for x in lines])


def test_unknown_model_lines_become_404_rows(harness: Harness, settings: Settings) -> None:
    lines = [chat_line(i, model="sim-other") for i in range(5)]
    b = harness.submit(lines)
    without = parse_model_specs({"models": [m for m in MODELS["models"] if m["id"] != "sim-other"]})
    harness.engine = Engine(settings, without).start()
    b = harness.wait_status(b["id"], "completed")
    out, err = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert not out and all(r["response"]["status_code"] == 404 for r in err)
    assert err[0]["response"]["body"]["error"]["code"] == "model_not_found"


def test_fair_across_batches_and_model_switch(harness: Harness) -> None:
    first, second = harness.submit(_slow(60)), harness.submit(_slow(60))
    other = harness.submit([chat_line(i, model="sim-other") for i in range(20)])
    harness.start_engine()
    mid = harness.wait(first["id"], lambda x: x["request_counts"]["completed"] >= 15)
    # round-robin: the second batch of the same model moves at the same pace
    assert harness.batch(second["id"])["request_counts"]["completed"] >= 8
    assert mid["status"] == "in_progress"
    # the other model waits until sim-slow has no unread lines, then loads and runs
    assert harness.batch(other["id"])["request_counts"]["completed"] == 0
    for x in (first, second, other):
        done = harness.wait_status(x["id"], "completed")
        assert done["request_counts"]["completed"] == done["request_counts"]["total"]


@pytest.mark.parametrize("n", [5000])
def test_pipeline_speed(harness: Harness, n: int) -> None:
    lines = [chat_line(i, max_tokens=8) for i in range(n)]
    b = harness.submit(lines)
    harness.wait_status(b["id"], "in_progress")
    t0 = time.monotonic()
    harness.start_engine()
    b = harness.wait_status(b["id"], "completed", timeout=120)
    elapsed = time.monotonic() - t0
    check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    print(f"\nsimulated pipeline: {n} lines in {elapsed:.2f}s = {n / elapsed:.0f} lines/s")


def test_model_load_failure_waits_retries_and_resumes(tmp_path: Path) -> None:
    """A model that fails to load never ends its batch with every line a 500 (#11): the batch waits
    in_progress with the error on it and in /health, the load is retried with backoff, and once the
    model files are fixed the batch runs to completion, exactly once."""
    pytest.importorskip("transformers")
    from tests.fixtures.tiny_models import build_tiny_llama

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{ this is not json")
    registry = parse_model_specs({"models": [
        {"id": "tiny", "backend": "transformers", "path": str(model_dir), "max_tokens": 4}]})
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0, threads=1,
                        checkpoint_interval=0.05, poll_interval=0.05, model_load_retry_max_delay=0.2)
    with TestClient(create_app(settings, registry)) as client:
        h = Harness(client, settings, registry)
        lines = [chat_line(i, model="tiny", max_tokens=4) for i in range(3)]
        b = h.submit(lines)
        h.start_engine()
        b = h.wait(b["id"], lambda b: b["errors"] is not None)
        assert b["status"] == "in_progress"
        assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
        notice = b["errors"]["data"][0]
        assert notice["code"] == "model_load_failed" and notice["param"] == "model" and "'tiny'" in notice["message"]

        def attempts() -> int:
            health = client.get("/health").json()
            assert health["status"] == "degraded" and health["models"]["tiny"]["state"] == "load_failed"
            assert health["models"]["tiny"]["error"]
            return int(health["models"]["tiny"]["attempts"])

        deadline = time.monotonic() + 30
        while attempts() < 3:  # retried, again and again, not given up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert h.batch(b["id"])["request_counts"]["failed"] == 0

        build_tiny_llama(tmp_path / "fixed")  # the operator fixes the model files
        (model_dir / "config.json").unlink()
        for f in (tmp_path / "fixed").iterdir():
            f.rename(model_dir / f.name)
        b = h.wait_status(b["id"], "completed", timeout=60)
        out, err = check_exactly_once(h, b, [x["custom_id"] for x in lines])
        assert len(out) == 3 and not err and b["errors"] is None
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["models"]["tiny"]["state"] == "loaded"
        h.stop_engine()


def test_generation_and_embedding_models_run_side_by_side(harness: Harness) -> None:
    chat = harness.submit(_slow(40))
    emb = harness.submit([{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                           "body": {"model": "sim-embed", "input": "x"}} for i in range(30)], "/v1/embeddings")
    harness.start_engine()
    done = harness.wait_status(emb["id"], "completed")
    assert done["request_counts"]["completed"] == 30
    assert harness.batch(chat["id"])["status"] == "in_progress"  # the embed slot did not wait for it
    harness.wait_status(chat["id"], "completed")


def test_one_engine_per_data_dir(harness: Harness, settings: Settings) -> None:
    first = harness.start_engine()
    deadline = time.monotonic() + 5
    while not first.feeder.is_alive():  # let the first one take the lock
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = Engine(settings, harness.registry).start()
    try:
        time.sleep(0.5)
        assert first.feeder.is_alive() and not second.feeder.is_alive()
        harness.stop_engine()
        deadline = time.monotonic() + 5
        while not second.feeder.is_alive():
            assert time.monotonic() < deadline, "second engine never took over"
            time.sleep(0.05)
        b = harness.submit([chat_line(0)])
        harness.wait_status(b["id"], "completed")
    finally:
        second.stop()


def test_new_batches_and_cancels_are_seen_without_the_full_poll(harness: Harness, settings: Settings) -> None:
    """With an hour between full polls, only the engine's check for commits by another process
    (PRAGMA data_version) can find a batch created, or cancelled, after the engine started."""
    harness.settings = settings.replace(poll_interval=3600.0)
    harness.start_engine()
    time.sleep(0.3)  # the engine's first full poll has run, and found nothing
    lines = [chat_line(i) for i in range(20)]
    b = harness.wait_status(harness.submit(lines)["id"], "completed", timeout=20)
    check_exactly_once(harness, b, [x["custom_id"] for x in lines])

    slow = [chat_line(i, model="sim-slow") for i in range(200)]
    s = harness.submit(slow)
    harness.wait(s["id"], lambda x: x["request_counts"]["completed"] > 0, timeout=20)
    assert harness.client.post(f"/v1/batches/{s['id']}/cancel").status_code == 200
    s = harness.wait_status(s["id"], "cancelled", timeout=20)
    out, err = check_exactly_once(harness, s, [x["custom_id"] for x in slow])
    assert out and any(r["error"] and r["error"]["code"] == "batch_cancelled" for r in err)


def test_throughput_line_counts_tokens_of_lines_in_flight(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lines that each take longer than a log interval: the throughput line must still show the
    tokens being produced, not tokens/s=0.0 while the engine is busy (#11)."""
    registry = parse_model_specs({"models": [
        {"id": "slow", "backend": "simulated", "max_tokens": 64,
         "engine_args": {"tokens_per_second": 40, "max_inflight": 4}}]})
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0,
                        checkpoint_interval=0.05, poll_interval=0.05, throughput_log_interval=0.2)
    caplog.set_level("INFO", logger="runner.engine.writer")
    with TestClient(create_app(settings, registry)) as client:
        h = Harness(client, settings, registry)
        b = h.submit([chat_line(i, model="slow", max_tokens=64) for i in range(3)])
        h.start_engine()
        h.wait_status(b["id"], "completed", timeout=60)
        h.stop_engine()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("throughput model=slow")]
    busy = [x for x in lines if "lines/s=0.0" in x and "in_flight=0" not in x]
    assert busy, lines  # intervals in which no line finished but lines were in flight
    assert all("tokens/s=0.0" not in x for x in busy), busy


@pytest.mark.parametrize("where", ["add", "step"])
def test_engine_death_is_never_a_line_error(harness: Harness, settings: Settings, where: str) -> None:
    """EngineDead from add() or step() ends the engine (its process exits and is restarted); the
    lines it held are run again by the next engine. No 500 row, every custom_id once (#12)."""
    from runner.engine.simulated import SimulatedBackend
    from runner.errors import EngineDead

    class Dying(SimulatedBackend):
        calls = 0

        def add(self, req):  # type: ignore[no-untyped-def]
            Dying.calls += 1
            if where == "add" and Dying.calls == 25:
                raise EngineDead("EngineCore died")
            super().add(req)

        def step(self):  # type: ignore[no-untyped-def]
            if where == "step" and Dying.calls >= 25:
                raise EngineDead("EngineCore died")
            return super().step()

    lines = _slow(60)
    b = harness.submit(lines)
    first = Engine(settings, harness.registry, backend_factory=lambda spec, s: Dying(spec, s)).start()
    assert first._thread is not None
    first._thread.join(30)
    assert isinstance(first.error, EngineDead)
    mid = harness.batch(b["id"])
    assert mid["status"] == "in_progress" and mid["request_counts"]["failed"] == 0
    harness.start_engine()  # what the supervisor does after the process exits
    b = harness.wait_status(b["id"], "completed")
    out, err = check_exactly_once(harness, b, [x["custom_id"] for x in lines])
    assert len(out) == 60 and not err


def test_a_run_of_5xx_rows_stops_the_model_then_it_resumes(tmp_path: Path) -> None:
    """A model that fails every request is stopped after MAX_5XX_RUN 500 rows, not allowed to turn
    the whole batch into 500s: the batch waits in_progress with the reason, the model is reloaded
    after a backoff, and the rest of the batch runs exactly once (#12)."""
    from runner.engine.loop import MAX_5XX_RUN
    from runner.engine.simulated import SimulatedBackend

    class Wedged(SimulatedBackend):
        """Fails every request until `healed`; the stand-in for a wedged model stack."""

        healed = False

        def add(self, req):  # type: ignore[no-untyped-def]
            if not Wedged.healed:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            super().add(req)

    registry = parse_model_specs({"models": [
        {"id": "m", "backend": "simulated", "max_tokens": 8, "engine_args": {"max_inflight": 8}}]})
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0,
                        checkpoint_interval=0.05, poll_interval=0.05, model_load_retry_max_delay=0.3)
    with TestClient(create_app(settings, registry)) as client:
        h = Harness(client, settings, registry)
        lines = [chat_line(i, model="m") for i in range(200)]
        b = h.submit(lines)
        h.engine = Engine(settings, registry, backend_factory=lambda spec, s: Wedged(spec, s)).start()
        b = h.wait(b["id"], lambda b: b["errors"] is not None)
        assert b["status"] == "in_progress" and b["errors"]["data"][0]["code"] == "model_unhealthy"
        assert "illegal memory access" in b["errors"]["data"][0]["message"]
        time.sleep(1.0)  # retried meanwhile (and stopped again): the failures stay bounded
        failed = h.batch(b["id"])["request_counts"]["failed"]
        assert MAX_5XX_RUN <= failed < 200
        assert client.get("/health").json()["models"]["m"]["state"] == "stopped"
        Wedged.healed = True
        b = h.wait_status(b["id"], "completed")
        out, err = check_exactly_once(h, b, [x["custom_id"] for x in lines])
        assert len(err) == b["request_counts"]["failed"] and len(out) == 200 - len(err) and len(out) > 100
        assert all(r["response"]["status_code"] == 500 for r in err) and b["errors"] is None
        h.stop_engine()
