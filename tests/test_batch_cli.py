"""`runner run`: the offline drop-in for `vllm run-batch` (simulated backend)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from runner.batch_cli import _engine_args
from runner.cli import main

MODELS = """models:
  - id: sim
    backend: simulated
    task: generate
    max_tokens: 8
  - id: emb
    backend: simulated
    task: embed
"""


def _line(cid: str, model: str = "sim", url: str = "/v1/chat/completions", **body: object) -> str:
    payload = {"model": model, "messages": [{"role": "user", "content": f"hello {cid}"}], **body}
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": payload})


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(MODELS)
    return p


def test_run_writes_every_line_once_with_errors_in_output(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "in.jsonl"
    lines = [_line(f"r{i}") for i in range(30)]
    lines.append(_line("bad-model", model="nope"))
    lines.append(_line("bad-n", n=0))
    lines.append(_line("wrong-url", url="/v1/embeddings"))
    inp.write_text("\n".join(lines))  # no final newline: tolerated
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-i", str(inp), "-o", str(out), "--models", str(models)])
    assert exit_info.value.code == 0
    rows = _rows(out)
    ids = Counter(r["custom_id"] for r in rows)
    assert set(ids) == {f"r{i}" for i in range(30)} | {"bad-model", "bad-n", "wrong-url"}
    assert max(ids.values()) == 1
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["bad-model"]["response"]["status_code"] == 404
    assert by_id["bad-n"]["response"]["status_code"] == 400
    assert by_id["wrong-url"]["response"]["status_code"] == 400
    assert by_id["wrong-url"]["response"]["body"]["error"]["code"] == "model_endpoint_mismatch"
    assert by_id["r0"]["response"]["body"]["object"] == "chat.completion"
    assert by_id["r0"]["id"].startswith("batch_req_")


def test_run_separate_errors_file_and_resume(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([_line(f"r{i}") for i in range(10)] + [_line("bad", model="nope")]) + "\n")
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    args = ["run", "-i", str(inp), "-o", str(out), "--errors", str(err), "--models", str(models)]
    with pytest.raises(SystemExit):
        main(args)
    assert len(_rows(out)) == 10 and len(_rows(err)) == 1
    # Simulate a crash after 4 rows with a torn fifth line, then run again: it resumes.
    kept = out.read_text().splitlines()[:4]
    out.write_text("\n".join(kept) + "\n" + kept[0][:20])
    with pytest.raises(SystemExit):
        main(args)
    rows = _rows(out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(10))
    assert [r["custom_id"] for r in _rows(err)] == ["bad"]


@pytest.mark.parametrize(
    ("content", "lineno"),
    [("not json at all\n", 1), (_line("a") + "\n" + json.dumps({"method": "POST"}) + "\n", 2)],
)
def test_run_refuses_input_that_is_not_a_batch_file(tmp_path: Path, models: Path, content: str, lineno: int,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(content)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-i", str(inp), "-o", str(out), "--models", str(models)])
    assert exit_info.value.code == 2
    assert f"in.jsonl:{lineno}:" in capsys.readouterr().err
    assert not out.exists() or out.read_text() == ""


def test_run_accepts_vllm_run_batch_flags(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(_line(f"r{i}", model="my-model") for i in range(5)) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-i", str(inp), "-o", str(out), "--model", "my-model", "--backend", "simulated",
              "--output-tmp-dir", str(tmp_path), "--response-role", "assistant"])
    assert exit_info.value.code == 0
    assert len(_rows(out)) == 5


def test_engine_flags_become_engine_args() -> None:
    assert _engine_args(["--max-model-len", "4096", "--enforce-eager", "--gpu-memory-utilization=0.5",
                         "--limit-mm-per-prompt", '{"image": 0}']) == {
        "max_model_len": 4096, "enforce_eager": True, "gpu_memory_utilization": 0.5,
        "limit_mm_per_prompt": {"image": 0}}


def test_model_that_fails_to_load_ends_the_run_and_a_rerun_resumes(tmp_path: Path) -> None:
    """A vLLM flag given to the simulated backend is refused at load (never silently ignored): the
    run stops with exit 1 and says why, writes nothing for the model's lines, and a fixed command
    line resumes."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([_line(f"r{i}", model="m") for i in range(6)] + [_line("bad", model="x")]) + "\n")
    out = tmp_path / "out.jsonl"
    failed = _run_cli(str(inp), "-o", str(out), "--model", "m", "--backend", "simulated", "--max-model-len",
                      "4096", cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "the model 'm' failed to load" in failed.stderr and "max_model_len" in failed.stderr
    assert {r["custom_id"] for r in _rows(out)} <= {"bad"}
    fixed = _run_cli(str(inp), "-o", str(out), "--model", "m", "--backend", "simulated", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    ids = Counter(r["custom_id"] for r in _rows(out))
    assert set(ids) == {f"r{i}" for i in range(6)} | {"bad"} and max(ids.values()) == 1


@pytest.mark.slow
def test_run_killed_mid_run_resumes_exactly_once(tmp_path: Path) -> None:
    models = tmp_path / "slow.yaml"
    models.write_text("models:\n  - id: sim\n    backend: simulated\n    task: generate\n"
                      "    engine_args: {tokens_per_second: 400}\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(_line(f"r{i}", max_tokens=8) for i in range(120)) + "\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "runner", "run", "-i", str(inp), "-o", str(out), "--models", str(models),
           "--max-inflight", "8"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 20):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(_rows_tolerant(out))
    assert 0 < partial < 120
    assert subprocess.run(cmd, timeout=120).returncode == 0
    ids = Counter(r["custom_id"] for r in _rows(out))
    assert set(ids) == {f"r{i}" for i in range(120)}
    assert max(ids.values()) == 1


def _rows_tolerant(path: Path) -> list[dict]:
    rows = []
    for raw in path.read_text().splitlines():
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError:
            pass
    return rows


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`runner run` in a child process with pipes, i.e. off a terminal, as a script or CI runs it."""
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_PROGRESS"}
    return subprocess.run([sys.executable, "-m", "runner", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_positional_input_summary_and_already_complete(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([_line(f"r{i}") for i in range(5)] + [_line("bad", model="nope")]) + "\n")
    out = tmp_path / "out.jsonl"
    first = _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = first.stderr.strip().splitlines()[-1]
    assert summary.startswith("runner run: 5 lines done, 1 errors (6/6 written in all), ")
    assert summary.endswith(" output tok/s") and " s, " in summary
    assert float(summary.split(", ")[-1].split()[0]) > 0  # tokens were counted
    rows = _rows(out)
    assert sorted(r["custom_id"] for r in rows) == ["bad"] + [f"r{i}" for i in range(5)]
    bad = next(r for r in rows if r["custom_id"] == "bad")["response"]["body"]["error"]
    assert bad["code"] == "model_not_found" and "this run serves 'sim', 'emb'" in bad["message"]

    again = _run_cli("-i", str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already complete: all 6 lines" in again.stderr
    assert _rows(out) == rows  # nothing written twice


def test_run_input_file_errors(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(_line("a") + "\n")
    none = _run_cli("-o", str(tmp_path / "o.jsonl"), "--models", str(models), cwd=tmp_path)
    assert none.returncode == 2 and "no input file: runner run IN.jsonl -o OUT.jsonl" in none.stderr
    two = _run_cli(str(inp), "-i", str(tmp_path / "other.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                   "--models", str(models), cwd=tmp_path)
    assert two.returncode == 2 and "two input files" in two.stderr


def test_run_unknown_model_with_model_flag_names_what_is_served(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(_line("a", model="my-model") + "\n" + _line("b", model="x" * 10_000) + "\n")
    out = tmp_path / "out.jsonl"
    r = _run_cli(str(inp), "-o", str(out), "--model", "sim-path", "--backend", "simulated",
                 "--max-model-len", "512", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 lines done, 2 errors" in r.stderr.strip().splitlines()[-1]
    errors = {row["custom_id"]: row["response"]["body"]["error"]["message"] for row in _rows(out)}
    assert "this run serves 'sim-path' (name it with --served-model-name)" in errors["a"]
    assert len(errors["b"]) < 400  # the 10,000-character model name is not echoed whole


def test_run_over_two_models_loads_each_once(tmp_path: Path) -> None:
    """Lines alternating between two generate models: the engine's feeder runs one model's lines,
    then switches once (the old per-line loop reloaded a model at every change of model)."""
    models = tmp_path / "two.yaml"
    models.write_text("models:\n  - id: a\n    backend: simulated\n    task: generate\n"
                      "  - id: b\n    backend: simulated\n    task: generate\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(_line(f"r{i}", model="ab"[i % 2]) for i in range(40)) + "\n")
    out = tmp_path / "out.jsonl"
    r = _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("model loaded model=") == 2, r.stderr
    rows = _rows(out)
    assert sorted(x["custom_id"] for x in rows) == sorted(f"r{i}" for i in range(40))
    assert {x["response"]["body"]["model"] for x in rows} == {"a", "b"}


@pytest.mark.slow
def test_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "slow.yaml"
    models.write_text("models:\n  - id: sim\n    backend: simulated\n    task: generate\n"
                      "    engine_args: {tokens_per_second: 200}\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(_line(f"r{i}", max_tokens=8) for i in range(100)) + "\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "runner", "run", str(inp), "-o", str(out), "--models", str(models)]
    first = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        size = out.stat().st_size
        second = _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
        assert second.returncode == 2 and "another runner is writing" in second.stderr, second.stderr
        assert out.stat().st_size >= size  # the refused run cut nothing
    finally:
        first.terminate()
        first.wait(30)
    assert first.returncode == 130  # SIGTERM: stopped after a final checkpoint
    assert _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path).returncode == 0
    ids = Counter(r["custom_id"] for r in _rows(out))
    assert set(ids) == {f"r{i}" for i in range(100)} and max(ids.values()) == 1


def test_checkpoint_file_resumes_and_a_changed_input_reads_the_rows(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(_line(f"r{i}") for i in range(20)) + "\n")
    out = tmp_path / "out.jsonl"
    assert _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path).returncode == 0
    ckpt = tmp_path / ".out.jsonl.runner-checkpoint"
    header = json.loads(ckpt.read_bytes().partition(b"\n")[0])
    assert header["completed"] == 20 and header["output_bytes"] == out.stat().st_size
    # A row appended after the checkpoint (a crash between write and checkpoint) is cut, not kept twice.
    rows = out.read_bytes()
    out.write_bytes(rows + rows.splitlines(keepends=True)[0])
    again = _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
    assert "already complete" in again.stderr
    # The input grows: the checkpoint is for another input, so the rows kept are read (by custom_id)
    # and only the new lines run.
    with open(inp, "a") as f:
        f.write(_line("new1") + "\n" + _line("new2") + "\n")
    grown = _run_cli(str(inp), "-o", str(out), "--models", str(models), cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    assert "2 lines done, 0 errors (22/22 written in all)" in grown.stderr.splitlines()[-1]
    ids = Counter(r["custom_id"] for r in _rows(out))
    assert set(ids) == {f"r{i}" for i in range(20)} | {"new1", "new2"} and max(ids.values()) == 1


def test_input_deleted_mid_run_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    """The run reads its input lazily; deleting it mid-run ends the run (exit 1) with the damage
    named (file_not_found's reason), the rows written so far kept, each once. Before, the writer's
    checkpoint stat'ed the input and died on a bare FileNotFoundError."""
    models = tmp_path / "slow.yaml"
    models.write_text("models:\n  - id: sim\n    backend: simulated\n    task: generate\n"
                      "    engine_args: {tokens_per_second: 200}\n")
    inp = tmp_path / "in.jsonl"
    # ~1 MB: far more than one 64 KiB read, so the input is reopened after the delete
    inp.write_text("\n".join(_line(f"r{i}", max_tokens=8, user="x" * 300) for i in range(3000)) + "\n")
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_PROGRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(inp), "-o", str(out), "--models",
                             str(models), "--max-inflight", "4"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        inp.unlink()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "No such file or directory" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert "in.jsonl" in stderr and "error:" in stderr, stderr[-2000:]
    ids = Counter(r["custom_id"] for r in _rows(out))
    assert 0 < len(ids) < 3000 and max(ids.values()) == 1
