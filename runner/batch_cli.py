"""`runner run`: one batch file -> output JSONL, offline, without the server.

A drop-in for `vllm run-batch`: it takes that command's flags (-i, -o, --model, --served-model-name
and the engine flags it passes on, e.g. --max-model-len 4096 --gpu-memory-utilization 0.9, which go
to the backend as engine_args) and, without --errors, writes error rows into the output file as
vLLM does. It runs the server's engine (engine/main.py) over a FileSource (engine/file_source.py):
the same window, model switching, error rows, fsync-then-checkpoint and exactly-once resume.
Each finished line is appended at once, memory stays flat, and running the same command again
resumes from the checkpoint beside the output (`.OUT.jsonl.runner-checkpoint`).

Per-line problems (unknown model, wrong url, a bad body) become error rows and the run goes on.
Input that is not a batch file at all (a line that is not JSON, or has no custom_id) stops the run
before any work, with exit code 2 naming the line. A model that fails to load ends the run with
exit code 1 (what is written stays; the next run resumes). Ctrl-C stops it the same way (130).

usage: runner run IN.jsonl -o OUT.jsonl [--errors ERR.jsonl] (--models models.yaml | --model PATH)
       (`-i IN.jsonl` works too). At the end one summary line goes to stderr: lines done, errors,
       seconds, output tokens/s; a run whose lines are all written already says so and does nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from runner.engine.file_source import FileSource, InputScan
from runner.engine.ledger import Totals
from runner.errors import ConfigError
from runner.log import configure_logging
from runner.model_specs import ModelRegistry, load_model_specs, parse_model_specs
from runner.settings import Settings, load_settings

EXIT_BAD_INPUT = 2


def add_run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run one batch file offline (a drop-in for `vllm run-batch`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The input may also come first without -i (`runner run in.jsonl -o out.jsonl`). It is not an
    # argparse positional: parse_known_args would hand it the value of an engine flag it does not
    # know (`--max-model-len 8192`); run_command takes it from the front of the unknown arguments.
    run.add_argument("-i", "--input-file", dest="input_file", help="input batch JSONL (or the first argument)")
    run.add_argument("-o", "--output-file", dest="output_file", required=True, help="output JSONL")
    run.add_argument("--errors", dest="errors_file", help="error rows go here (default: into the output)")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--models", dest="models_path", help="models.yaml to serve the lines' models from")
    group.add_argument("--model", dest="model", help="a model path or Hugging Face id (like vllm run-batch)")
    run.add_argument("--served-model-name", dest="served_model_name", help="the `model` name lines use")
    run.add_argument("--backend", default=None, help="auto | vllm | transformers | simulated")
    run.add_argument("--task", choices=("generate", "embed"), help="default: from the input's url")
    run.add_argument("--max-tokens", type=int, default=None, help="cap when a request gives none")
    run.add_argument("--max-inflight", type=int, default=None, help="lines in flight (default: backend's)")
    run.add_argument("--threads", type=int, default=None, help="CPU threads (transformers backend)")
    run.add_argument("--data-dir", dest="data_dir", default=None, help="model cache parent (RUNNER_DATA_DIR)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")
    # vllm run-batch flags that mean nothing offline; accepted so existing command lines work.
    for flag in ("--output-tmp-dir", "--url", "--port", "--response-role"):
        run.add_argument(flag, help=argparse.SUPPRESS)
    run.add_argument("--enable-metrics", action="store_true", help=argparse.SUPPRESS)


def _engine_args(extra: list[str]) -> dict[str, Any]:
    """Unknown `--flag value` pairs -> engine_args, with vLLM's spelling (dashes -> underscores)."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}")
        key, eq, value = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                value = extra[i + 1]
                i += 1
            else:
                value = "true"
        args[key] = _coerce(value)
        i += 1
    return args


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.startswith(("{", "[")):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return value


def _registry(args: argparse.Namespace, scan: InputScan, engine_args: dict[str, Any]) -> ModelRegistry:
    if args.model:
        task = args.task or ("embed" if scan.urls == {"/v1/embeddings"} else "generate")
        entry: dict[str, Any] = {
            "id": args.served_model_name or args.model,
            "path": args.model,
            "backend": args.backend or "auto",
            "task": task,
            "engine_args": engine_args,
        }
        if args.max_tokens:
            entry["max_tokens"] = args.max_tokens
        return parse_model_specs({"models": [entry]}, base_dir=Path.cwd(), source="--model")
    registry = load_model_specs(args.models_path or load_settings().models_path)
    if engine_args:
        raise ConfigError("engine flags go in models.yaml's engine_args when --models is used")
    return registry


class Progress:
    """The run's progress line (on a terminal, or with RUNNER_PROGRESS=1) and its summary, from
    the ledger's totals at each checkpoint (the writer thread calls checkpoint())."""

    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and (sys.stderr.isatty() or os.environ.get("RUNNER_PROGRESS") == "1")
        self.begin(already)

    def begin(self, already: int, failed: int = 0, output_tokens: int = 0) -> None:
        self.done = self.start_done = already
        self.errors = 0
        self._start_failed, self._start_tokens = failed, output_tokens
        self.output_tokens = 0
        self.started = time.monotonic()
        self._last = 0.0

    def checkpoint(self, totals: Totals) -> None:
        self.done = totals.completed + totals.failed
        self.errors = totals.failed - self._start_failed
        self.output_tokens = totals.output_tokens - self._start_tokens
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.5 or self.done == self.total):
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            rate = (self.done - self.start_done) / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
            sys.stderr.write(f"\r{self.done}/{self.total} lines  {rate:7.1f} lines/s  "
                             f"{self.output_tokens / elapsed:8.1f} output tok/s  ETA {eta_s}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")

    def summary(self) -> str:
        """The one line printed at the end, on a terminal or not."""
        seconds = time.monotonic() - self.started
        ran = self.done - self.start_done
        return (f"runner run: {ran - self.errors} lines done, {self.errors} errors "
                f"({self.done}/{self.total} written in all), {seconds:.1f} s, "
                f"{self.output_tokens / max(seconds, 1e-9):.1f} output tok/s")


def _input_file(args: argparse.Namespace, extra: list[str]) -> str:
    """-i, or the first argument when it is not a flag (taken off `extra`)."""
    first = extra.pop(0) if extra and not extra[0].startswith("-") else None
    if args.input_file and first and first != args.input_file:
        raise ConfigError(f"two input files given: {args.input_file!r} (-i) and {first!r}")
    path = args.input_file or first
    if not path:
        raise ConfigError("no input file: runner run IN.jsonl -o OUT.jsonl (or -i IN.jsonl)")
    return str(path)


def run_command(args: argparse.Namespace) -> int:
    extra = list(getattr(args, "_extra", []))
    try:
        input_path = Path(_input_file(args, extra))
        engine_args = _engine_args(extra)
        out_path = Path(args.output_file)
        if not input_path.exists():
            raise ConfigError(f"input file {str(input_path)!r} does not exist")
        overrides = {k: v for k, v in (("threads", args.threads), ("data_dir", args.data_dir),
                                       ("max_inflight", args.max_inflight),
                                       ("backend", args.backend if not args.model else None)) if v is not None}
        # no /metrics reads vLLM's stats in an offline run, so vLLM need not keep them
        settings = load_settings({**overrides, "vllm_metrics": False})
        scan = InputScan.of(input_path, settings.max_line_bytes)
        registry = _registry(args, scan, engine_args)
        err_path = Path(args.errors_file) if args.errors_file else None
        hint = " (name it with --served-model-name)" if args.model else ""
        progress = Progress(scan.total, 0, args.progress)
        source = FileSource(input_path, out_path, err_path, registry, scan, hint=hint,
                            max_line_bytes=settings.max_line_bytes, on_checkpoint=progress.checkpoint)
    except ConfigError as exc:
        print(f"runner run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    t = source.ledger.totals
    progress.begin(t.completed + t.failed, t.failed, t.output_tokens)
    if source.ledger.finished:
        source.close()
        where = f"{out_path}" + (f" and {err_path}" if err_path else "")
        print(f"runner run: already complete: all {scan.total} lines of {input_path} are in {where}; "
              "nothing to do (delete the output to run again)", file=sys.stderr)
        return 0
    configure_logging(settings.log_level, process="run")
    code = _run_engine(settings, registry, source)
    progress.checkpoint(source.ledger.totals)
    progress.close()
    print(progress.summary(), file=sys.stderr)
    return code


def _run_engine(settings: Settings, registry: ModelRegistry, source: FileSource) -> int:
    """Run the engine until the file is done, a model fails, or a signal stops it."""
    from runner.engine.main import Engine  # noqa: PLC0415 - pulls in the backends' factory

    engine = Engine(settings, registry, source=source)
    interrupted = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        engine.start()
        while engine.running and not (source.ended.is_set() or source.models.failed.is_set()
                                      or interrupted.is_set()):
            interrupted.wait(0.1)
        engine.stop(timeout=None)  # the writer drains and checkpoints; the models unload
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if source.ended.is_set():
        if source.failure is not None:  # the input was damaged (gone or changed) under the run
            print(f"\nrunner run: error: {source.failure}", file=sys.stderr)
            return 1
        return 0
    if source.models.failure is not None:
        print(f"\nrunner run: error: {source.models.failure} (what is written stays; run again to resume)",
              file=sys.stderr)
        return 1
    if engine.error is not None:
        print(f"\nrunner run: error: {engine.error}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(engine.error, ConfigError) else 1
    print("\nrunner run: stopped; run the same command again to resume", file=sys.stderr)
    return 130
