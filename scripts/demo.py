"""The main job on a fresh machine: start `runner serve` on the default models.yaml (CPU, SmolLM2),
upload examples/sample_batch.jsonl with the official openai client, run it, print the answers.

The server's log goes to <data dir>/demo-server.log (printed at the start). The first run converts
SmolLM2's GGUF once into <data dir>/models; the demo says so only on a run that does it."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
from openai import OpenAI

from runner.errors import ConfigError
from runner.model_specs import load_model_specs
from runner.preflight import preflight
from runner.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the engine logs when it loads a model, per backend (vllm_backend.py, hf_backend.py)
_LOADED = (("vllm loading model=", "vllm"), ("transformers model loaded model=", "transformers"))


def backends_used(log: str) -> dict[str, str]:
    """model id -> the backend the engine loaded it on, read from the server's log: what ran, not
    what models.yaml asked for (`auto` decides in the engine)."""
    used: dict[str, str] = {}
    for line in log.splitlines():
        for marker, backend in _LOADED:
            at = line.find(marker)
            if at >= 0:
                used[line[at + len(marker):].split()[0]] = backend
    return used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", default=str(ROOT / "examples" / "sample_batch.jsonl"))
    ap.add_argument("--models", default=str(ROOT / "models.yaml"))
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()

    # The checks `runner serve` runs at start; their notes say whether this run converts the model.
    try:
        settings = load_settings({"data_dir": args.data_dir, "models_path": args.models})
        notes = preflight(settings, load_model_specs(args.models))
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    port = free_port()
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    log_path = Path(args.data_dir) / "demo-server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the server writes it until the finally below
    print(f"server log: {log_path}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", str(port), "--data-dir", args.data_dir,
         "--models", args.models],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(), file=sys.stderr)
                print(f"runner serve did not start; server log: {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        client = OpenAI(base_url=base + "/v1", api_key="local")
        with open(args.input, "rb") as f:
            upload = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        print(f"batch {batch.id} created")
        started = time.monotonic()
        last = ""
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(1)
            batch = client.batches.retrieve(batch.id)
            rc = batch.request_counts
            line = f"  {batch.status}: {rc.completed if rc else 0}/{rc.total if rc else 0} done"
            if line != last:
                print(line, flush=True)
                last = line
            failing = [e for e in (batch.errors.data if batch.errors else []) if e.code == "model_load_failed"]
            if failing:  # the server keeps retrying; a demo stops and says why
                print(f"{failing[0].message}\nserver log: {log_path}", file=sys.stderr)
                return 1
            if time.monotonic() - started > args.timeout:
                print(f"timed out; server log: {log_path}", file=sys.stderr)
                return 1
        print(f"batch {batch.status} in {time.monotonic() - started:.1f} s; usage: {batch.usage}")
        for model, backend in backends_used(log_path.read_text(errors="replace")).items():
            print(f"model {model} ran on the {backend} backend")
        if batch.status != "completed":
            print(f"{batch.errors}\nserver log: {log_path}", file=sys.stderr)
            return 1
        for raw in client.files.content(batch.output_file_id).text.splitlines():
            row = orjson.loads(raw)
            answer = row["response"]["body"]["choices"][0]["message"]["content"]
            print(f"\n[{row['custom_id']}]\n{answer.strip()}")
        if batch.error_file_id:
            errors = client.files.content(batch.error_file_id).text.strip()
            if errors:
                print("\nerrors:\n" + errors)
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
