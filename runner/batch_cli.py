"""`runner run`: one batch file -> output JSONL, offline, without the server.

A drop-in for `vllm run-batch`: it takes that command's flags (-i, -o, --model, --served-model-name
and the engine flags it passes on, e.g. --max-model-len 4096 --gpu-memory-utilization 0.9, which go
to the backend as engine_args) and, without --errors, writes error rows into the output file as
vLLM does. Unlike run-batch it streams: each finished line is appended at once, memory stays flat
(a bounded in-flight window), and running the same command again resumes: lines whose custom_id is
already in the output (or errors) file are skipped.

Per-line problems (unknown model, wrong url, a bad body) become error rows and the run goes on.
Input that is not a batch file at all (a line that is not JSON, or has no custom_id) stops the run
before any work, with exit code 2 naming the line.

usage: runner run IN.jsonl -o OUT.jsonl [--errors ERR.jsonl] (--models models.yaml | --model PATH)
       (`-i IN.jsonl` works too). At the end one summary line goes to stderr: lines done, errors,
       seconds, output tokens/s; a run whose lines are all written already says so and does nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from runner.engine.backend import Backend, LineRequest, LineResult
from runner.errors import ConfigError, LineError, endpoint_mismatch
from runner.ids import new_line_id, new_request_id
from runner.jsonl import iter_lines
from runner.model_specs import SUPPORTED_ENDPOINTS, ModelRegistry, ModelSpec, load_model_specs, parse_model_specs
from runner.settings import load_settings
from runner.wire import output_line

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


class InputScan:
    """The pre-pass: every line is JSON with a custom_id (else exit 2), and which url/model it uses."""

    def __init__(self, path: Path) -> None:
        self.total = 0
        self.ids: set[str] = set()
        self.urls: set[str] = set()
        self.models: set[str] = set()
        for lineno, raw in iter_lines(path):
            if raw is None:
                raise ConfigError(f"{path}:{lineno}: line is too long")
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not JSON ({exc}); is this a batch file?") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
                raise ConfigError(f"{path}:{lineno}: no string 'custom_id'; is this a batch file?")
            self.total += 1
            self.ids.add(obj["custom_id"])
            if isinstance(obj.get("url"), str):
                self.urls.add(obj["url"])
            body = obj.get("body")
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                self.models.add(body["model"])


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


def _read_done(path: Path) -> set[str]:
    """custom_ids already in an output/errors file; a torn last line (a crash mid-write) is cut off."""
    done: set[str] = set()
    if not path.exists():
        return done
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
        for raw in data[:end].splitlines():
            if raw.strip():
                done.add(orjson.loads(raw)["custom_id"])
    return done


MAX_ECHO = 100  # characters of a client's value echoed in an error message


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "...'"


class Progress:
    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self.total, self.done, self.start_done = total, already, already
        self.tokens = 0
        self.output_tokens = 0
        self.errors = 0
        self.enabled = enabled and (sys.stderr.isatty() or os.environ.get("RUNNER_PROGRESS") == "1")
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, n: int, tokens: int, output_tokens: int = 0, errors: int = 0) -> None:
        self.done += n
        self.tokens += tokens
        self.output_tokens += output_tokens
        self.errors += errors
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.5 or self.done == self.total):
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            rate = (self.done - self.start_done) / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
            sys.stderr.write(f"\r{self.done}/{self.total} lines  {rate:7.1f} lines/s  "
                             f"{self.tokens / elapsed:8.1f} tok/s  ETA {eta_s}")
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


def _write(f: IO[bytes], row: dict[str, Any]) -> None:
    f.write(orjson.dumps(row) + b"\n")
    f.flush()


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
        scan = InputScan(input_path)
        registry = _registry(args, scan, engine_args)
    except ConfigError as exc:
        print(f"runner run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    err_path = Path(args.errors_file) if args.errors_file else None
    done = _read_done(out_path) | (_read_done(err_path) if err_path else set())
    if scan.ids and scan.ids <= done:
        where = f"{out_path}" + (f" and {err_path}" if err_path else "")
        print(f"runner run: already complete: all {scan.total} lines of {input_path} are in {where}; "
              "nothing to do (delete the output to run again)", file=sys.stderr)
        return 0
    overrides = {k: v for k, v in (("threads", args.threads), ("data_dir", args.data_dir),
                                   ("backend", args.backend if not args.model else None)) if v is not None}
    settings = load_settings(overrides)
    progress = Progress(scan.total, len(done & scan.ids), args.progress)
    backends: dict[str, Backend] = {}
    out = open(out_path, "ab")
    err = open(err_path, "ab") if err_path else out
    try:
        code = _run(input_path, registry, settings, args, done, backends, out, err, progress)
    finally:
        for b in backends.values():
            b.close()
        progress.close()
        out.close()
        if err is not out:
            err.close()
    print(progress.summary(), file=sys.stderr)
    return code


def _run(input_path: Path, registry: ModelRegistry, settings: Any, args: argparse.Namespace, done: set[str],
         backends: dict[str, Backend], out: IO[bytes], err: IO[bytes], progress: Progress) -> int:
    from runner.engine.factory import make_backend  # noqa: PLC0415 - heavy backends load on demand

    custom_ids: dict[str, str] = {}
    served = ", ".join(_echo(m) for m in registry.ids)

    def emit(custom_id: str, status: int, body: Any, tokens: int = 0, output_tokens: int = 0) -> None:
        row = output_line(new_line_id(), custom_id, status, new_request_id(), body)
        _write(out if status == 200 else err, row)
        progress.update(1, tokens, output_tokens, errors=int(status != 200))

    def drain(backend: Backend) -> None:
        for res in backend.step():
            emit_result(res)

    def emit_result(res: LineResult) -> None:
        cid = custom_ids.pop(res.key)
        emit(cid, res.status_code, res.body, res.usage.prompt_tokens + res.usage.completion_tokens,
             res.usage.completion_tokens)

    for lineno, raw in iter_lines(input_path):
        assert raw is not None  # the pre-pass rejected over-long lines
        obj = orjson.loads(raw)
        cid = obj["custom_id"]
        if cid in done:
            continue
        done.add(cid)
        body = obj.get("body")
        url = obj.get("url")
        spec: ModelSpec | None = None
        problem: LineError | None = None
        if obj.get("method", "POST") != "POST":
            problem = LineError("'method' must be POST.", param="method", code="invalid_method")
        elif not isinstance(body, dict):
            problem = LineError("'body' must be a JSON object.", param="body", code="invalid_body")
        else:
            model = body.get("model")
            spec = registry.specs[0] if model is None and len(registry.specs) == 1 else registry.get(str(model))
            if spec is None:
                hint = " (name it with --served-model-name)" if args.model else ""
                problem = LineError(f"The model {_echo(body.get('model'))} does not exist; this run serves "
                                    f"{served}{hint}.", status=404, param="model", code="model_not_found")
            elif not isinstance(url, str) or url not in SUPPORTED_ENDPOINTS:
                problem = LineError(f"The url {_echo(url)} is not a batch endpoint (one of "
                                    f"{', '.join(SUPPORTED_ENDPOINTS)}).", param="url", code="invalid_url")
            elif not spec.serves(url):
                problem = endpoint_mismatch(spec.id, url, spec.endpoints)
        if problem is not None or spec is None or not isinstance(url, str) or not isinstance(body, dict):
            assert problem is not None
            emit(cid, problem.status, problem.body())
            continue
        backend = backends.get(spec.id)
        if backend is None:
            # One model at a time: finish what the others have in flight, then free them.
            for other_id in list(backends):
                other = backends.pop(other_id)
                while other.has_unfinished():
                    drain(other)
                other.close()
            backend = backends[spec.id] = make_backend(spec, settings)
        limit = args.max_inflight or settings.max_inflight or backend.default_max_inflight
        req = LineRequest(key=f"run:{lineno}", batch_id="run", custom_id=cid, endpoint=url, body=body)
        try:
            backend.add(req)
        except LineError as exc:
            emit(cid, exc.status, exc.body())
            continue
        custom_ids[req.key] = cid
        while len(custom_ids) >= limit and backend.has_unfinished():
            drain(backend)
    for backend in backends.values():
        while backend.has_unfinished():
            drain(backend)
    return 0
