"""`runner submit`, `runner status` and `runner cancel`: a terminal client for a runner server.

submit uploads a batch file, creates the batch and prints its id (stdout, so `id=$(runner submit
f.jsonl)` works). With --wait it shows progress on stderr until the batch ends, then downloads the
output and error files. The progress line is redrawn in place on a terminal; elsewhere (a CI log)
a plain line is printed on each status change and every --progress-interval seconds.

Ctrl-C during --wait: on a terminal it asks "Cancel batch X? [y/N]"; y cancels the batch, waits for
it to end cancelled and downloads what it finished; anything else goes on waiting. Without a
terminal nothing can be asked, so it cancels only with --cancel-on-interrupt, and otherwise leaves
the batch running, says how to cancel it, and exits 130.

The server: --base-url, else OPENAI_BASE_URL, else this machine's `runner serve`
(http://127.0.0.1:RUNNER_PORT/v1). The key: --api-key, else OPENAI_API_KEY, else the first of
RUNNER_API_KEYS, else none (a server without keys serves loopback clients without one).

Exit codes: 0 completed; 1 the batch failed (its errors are printed with their codes); 2 a usage
error, an error answer from the server (printed as one line with its HTTP status and code) or no
server; 3 expired; 4 cancelled; 130 interrupted, the batch left running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from runner.api_client import ApiClient, ServerError, Unreachable
from runner.settings import load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_EXPIRED = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED = 130

ENDED = {"completed": EXIT_OK, "failed": EXIT_FAILED, "expired": EXIT_EXPIRED, "cancelled": EXIT_CANCELLED}
# Polls that may fail in a row (server restarting, a dropped connection) before --wait gives up.
WAIT_RETRY_SECONDS = 120.0


class CliError(Exception):
    """A one-line error for the user (exit 2)."""


# -- parsers ---------------------------------------------------------------------------------------


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", dest="base_url",
                   help="API root, e.g. http://gpu-box:8000/v1 (default: OPENAI_BASE_URL, else "
                        "http://127.0.0.1:RUNNER_PORT/v1)")
    p.add_argument("--api-key", dest="api_key",
                   help="API key (default: OPENAI_API_KEY, else the first of RUNNER_API_KEYS)")


def add_client_parsers(sub: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    submit = sub.add_parser("submit", help="upload a batch file to a server, create the batch; --wait for results",
                            description=__doc__, formatter_class=raw)
    submit.add_argument("file", help="batch input JSONL (one request per line)")
    submit.add_argument("--wait", action="store_true", help="show progress until the batch ends, then download")
    submit.add_argument("-o", "--output", dest="output",
                        help="where --wait writes the output file (default FILE.output.jsonl beside FILE)")
    submit.add_argument("--errors", dest="errors",
                        help="where --wait writes the error file (default FILE.errors.jsonl beside FILE); "
                             "written empty when no line failed")
    submit.add_argument("--endpoint", help="batch endpoint (default: the url of FILE's first line)")
    submit.add_argument("--completion-window", dest="completion_window", default="24h", help="default 24h")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="batch metadata; repeat for more keys")
    submit.add_argument("--poll-interval", dest="poll_interval", type=float, default=1.0,
                        help="seconds between status polls with --wait (default 1)")
    submit.add_argument("--progress-interval", dest="progress_interval", type=float, default=10.0,
                        help="seconds between progress lines when stderr is not a terminal (default 10)")
    submit.add_argument("--cancel-on-interrupt", dest="cancel_on_interrupt", action="store_true",
                        help="Ctrl-C/SIGINT cancels the batch without asking (the default without a terminal "
                             "is to leave it running)")
    _connection(submit)

    status = sub.add_parser("status", help="list your batches on a server, or show one",
                            description="Without BATCH_ID: a table of the key's batches, newest first. With "
                                        "it: one batch's details, throughput and errors.")
    status.add_argument("batch_id", nargs="?", help="a batch id (batch_...)")
    status.add_argument("--limit", type=int, default=20, help="batches listed, 1-100 (default 20)")
    status.add_argument("--json", dest="as_json", action="store_true", help="print the server's JSON")
    _connection(status)

    cancel = sub.add_parser("cancel", help="cancel a batch on a server")
    cancel.add_argument("batch_id", help="a batch id (batch_...)")
    _connection(cancel)


def _q(batch_id: str) -> str:
    """A path segment: an id typed by the user cannot reach another route ("../files")."""
    return urllib.parse.quote(batch_id, safe="")


# -- connection ------------------------------------------------------------------------------------


def make_client(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ApiClient:
    env = os.environ if environ is None else environ
    base = args.base_url or env.get("OPENAI_BASE_URL")
    key = args.api_key or env.get("OPENAI_API_KEY")
    if not base or not key:
        settings = load_settings()  # RUNNER_PORT and RUNNER_API_KEYS: this machine's server
        if not base:
            host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
            host = f"[{host}]" if ":" in host else host
            base = f"http://{host}:{settings.port}/v1"
        if not key and settings.api_keys:
            key = settings.api_keys[0]
    try:
        return ApiClient(base, key or None)
    except ValueError as exc:
        raise CliError(f"--base-url/OPENAI_BASE_URL: {exc}") from None


def run_client_command(args: argparse.Namespace) -> int:
    """Dispatch submit/status/cancel; every failure is one line on stderr and an exit code."""
    try:
        client = make_client(args)
        if args.command == "submit":
            return submit_command(client, args)
        if args.command == "status":
            return status_command(client, args)
        return cancel_command(client, args)
    except ServerError as exc:
        print(f"runner: error: {exc.line()}", file=sys.stderr)
    except Unreachable as exc:
        print(f"runner: error: {exc}; is `runner serve` running there? (--base-url or OPENAI_BASE_URL)",
              file=sys.stderr)
    except CliError as exc:
        print(f"runner: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


# -- formatting ------------------------------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    rc = batch.get("request_counts") or {}
    return int(rc.get("total") or 0), int(rc.get("completed") or 0), int(rc.get("failed") or 0)


def _throughput(batch: dict[str, Any]) -> tuple[str, str, str]:
    """(lines/s, output tok/s, ETA) from the Batch's `throughput` field; "-" while it is null or
    missing (before anything is measured, or a server without it). Nothing is estimated here."""
    tp = batch.get("throughput")
    if not isinstance(tp, dict):
        return "-", "-", "-"

    def num(key: str) -> str:
        v = tp.get(key)
        return f"{v:.1f}" if isinstance(v, int | float) else "-"

    return num("lines_per_second"), num("output_tokens_per_second"), fmt_duration(tp.get("eta_seconds"))


def progress_text(batch: dict[str, Any], elapsed: float, bar_width: int = 0) -> str:
    total, completed, failed = _counts(batch)
    done = completed + failed
    status = batch.get("status", "?")
    if total:
        pct = f"{100 * done / total:.0f}%"
        lines = f"{done}/{total} lines ({pct})"
    else:
        lines = "-/- lines"
    bar = ""
    if bar_width and total:
        filled = int(bar_width * done / total)
        bar = "[" + "#" * filled + "." * (bar_width - filled) + "] "
    _, tok_s, eta = _throughput(batch)
    return (f"{batch.get('id', '?')} {status:<11} {bar}{lines}, failed {failed}, {tok_s} tok/s, "
            f"ETA {eta}, elapsed {fmt_duration(elapsed)}")


class Progress:
    """In place on a terminal (\\r + erase line); plain lines on a change of status and every
    `interval` seconds otherwise."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self.last_line = 0.0
        self.last_status: str | None = None
        self.drawn = False

    def show(self, batch: dict[str, Any], elapsed: float) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + progress_text(batch, elapsed, bar_width=24) + "\x1b[K")
            self.drawn = True
        elif batch.get("status") != self.last_status or now - self.last_line >= self.interval:
            self.stream.write("progress: " + progress_text(batch, elapsed) + "\n")
            self.last_line = now
        self.last_status = batch.get("status")
        self.stream.flush()

    def end_line(self) -> None:
        """Leaves the in-place line so the next message starts on its own line."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def say(self, text: str) -> None:
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()


# -- submit ----------------------------------------------------------------------------------------


def infer_endpoint(path: Path) -> str:
    """The url of the file's first non-blank line, as the Batch API requires all lines to share it."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    url = None
                if isinstance(url, str) and url:
                    return url
                raise CliError(f"{path}: the first line has no \"url\" to take the endpoint from; pass --endpoint")
    raise CliError(f"{path}: the file is empty")


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--metadata takes KEY=VALUE, got {pair[:100]!r}")
        out[key] = value
    return out or None


def _default_path(src: Path, suffix: str) -> Path:
    stem = src.name[: -len(".jsonl")] if src.name.endswith(".jsonl") else src.name
    return src.with_name(f"{stem}.{suffix}.jsonl")


def submit_command(client: ApiClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if args.poll_interval <= 0 or args.progress_interval <= 0:
        raise CliError("--poll-interval and --progress-interval must be positive")
    endpoint = args.endpoint or infer_endpoint(path)
    metadata = _metadata(args.metadata)
    out = Path(args.output) if args.output else _default_path(path, "output")
    err = Path(args.errors) if args.errors else _default_path(path, "errors")
    uploaded = client.upload(path)
    body: dict[str, Any] = {"input_file_id": uploaded["id"], "endpoint": endpoint,
                            "completion_window": args.completion_window}
    if metadata:
        body["metadata"] = metadata
    batch = client.request("POST", "/batches", body)
    print(batch["id"], flush=True)
    if not args.wait:
        return EXIT_OK
    return wait_and_download(client, batch["id"], out, err, poll=args.poll_interval,
                             progress_interval=args.progress_interval, cancel_on_interrupt=args.cancel_on_interrupt)


def _ask_cancel(batch_id: str, progress: Progress, ask: Callable[[str], str]) -> bool:
    progress.end_line()
    try:
        answer = ask(f"Cancel batch {batch_id}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def wait_and_download(client: ApiClient, batch_id: str, out: Path, err: Path, *, poll: float = 1.0,
                      progress_interval: float = 10.0, cancel_on_interrupt: bool = False,
                      stream: TextIO | None = None, ask: Callable[[str], str] = input) -> int:
    progress = Progress(stream or sys.stderr, progress_interval)
    interactive = sys.stdin.isatty() and progress.tty
    start = time.monotonic()
    batch: dict[str, Any] = {"id": batch_id}
    failing_since: float | None = None
    while True:
        try:
            try:
                batch = client.request("GET", f"/batches/{_q(batch_id)}")
                failing_since = None
            except (Unreachable, ServerError) as exc:
                # A server restarting (connection refused, 503) is waited out; a 4xx is final.
                if isinstance(exc, ServerError) and exc.status < 500:
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > WAIT_RETRY_SECONDS:
                    raise
                progress.say(f"runner: warning: {exc.line() if isinstance(exc, ServerError) else exc}; retrying")
                time.sleep(min(5.0, poll * 2))
                continue
            progress.show(batch, time.monotonic() - start)
            if batch.get("status") in ENDED:
                break
            time.sleep(poll)
        except KeyboardInterrupt:
            if cancel_on_interrupt or (interactive and _ask_cancel(batch_id, progress, ask)):
                progress.say(f"cancelling {batch_id} ...")
                batch = client.request("POST", f"/batches/{_q(batch_id)}/cancel")
                continue
            if interactive:
                continue  # answered no: keep waiting
            progress.say(f"interrupted: batch {batch_id} keeps running on the server. See it with "
                         f"`runner status {batch_id}`; cancel it with `runner cancel {batch_id}`.")
            return EXIT_INTERRUPTED
    progress.end_line()
    return _finish(client, batch, out, err, progress)


def _finish(client: ApiClient, batch: dict[str, Any], out: Path, err: Path, progress: Progress) -> int:
    status = batch["status"]
    for e in ((batch.get("errors") or {}).get("data") or [])[:20]:
        line = f" line {e['line']}" if e.get("line") is not None else ""
        progress.say(f"batch error{line}: {e.get('code')}: {e.get('message')}")
    total, completed, failed = _counts(batch)
    written = []
    if batch.get("output_file_id"):
        n = client.download(batch["output_file_id"], out)
        written.append(f"output {out} ({n} bytes)")
    if batch.get("error_file_id"):
        n = client.download(batch["error_file_id"], err)
        written.append(f"errors {err} ({n} bytes)")
    elif batch.get("output_file_id"):
        # Both files always exist after a run that produced output, so a script reading both never
        # reads a stale error file from an earlier run.
        err.write_bytes(b"")
        written.append(f"errors {err} (empty: no line failed)")
    progress.say(f"batch {batch['id']} {status}: {completed} completed, {failed} failed of {total}"
                 + (f"; wrote {', '.join(written)}" if written else "; no files to download"))
    return ENDED.get(status, EXIT_ERROR)


# -- status, cancel --------------------------------------------------------------------------------


def status_command(client: ApiClient, args: argparse.Namespace) -> int:
    if args.batch_id:
        batch = client.request("GET", f"/batches/{_q(args.batch_id)}")
        if args.as_json:
            print(json.dumps(batch, indent=2))
        else:
            print(describe(batch))
        return EXIT_OK
    if not 1 <= args.limit <= 100:
        raise CliError("--limit must be 1-100")
    listing = client.request("GET", f"/batches?limit={args.limit}")
    if args.as_json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    print(batch_table(listing.get("data") or []))
    if listing.get("has_more"):
        print(f"(more batches: raise --limit, up to 100; the last shown is {listing.get('last_id')})")
    return EXIT_OK


def batch_table(batches: list[dict[str, Any]]) -> str:
    header = ("ID", "STATUS", "DONE/TOTAL", "FAILED", "CREATED (UTC)", "MODEL")
    rows = [header]
    for b in batches:
        total, completed, failed = _counts(b)
        rows.append((str(b.get("id")), str(b.get("status")), f"{completed + failed}/{total}", str(failed),
                     fmt_time(b.get("created_at")), str(b.get("model") or "-")))
    if len(rows) == 1:
        return "no batches"
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def describe(batch: dict[str, Any]) -> str:
    total, completed, failed = _counts(batch)
    lines_s, tok_s, eta = _throughput(batch)
    usage = batch.get("usage") or {}
    fields = [
        ("id", batch.get("id")),
        ("status", batch.get("status")),
        ("endpoint", batch.get("endpoint")),
        ("model", batch.get("model") or "-"),
        ("lines", f"{completed + failed}/{total} done, {completed} completed, {failed} failed"),
        ("throughput", f"{lines_s} lines/s, {tok_s} output tok/s, ETA {eta}"),
        ("tokens", f"{usage.get('input_tokens', 0)} input, {usage.get('output_tokens', 0)} output"),
        ("input_file_id", batch.get("input_file_id")),
        ("output_file_id", batch.get("output_file_id") or "-"),
        ("error_file_id", batch.get("error_file_id") or "-"),
    ]
    for key in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                "cancelling_at", "cancelled_at", "expires_at"):
        if batch.get(key):
            fields.append((key, fmt_time(batch[key]) + " UTC"))
    if batch.get("metadata"):
        fields.append(("metadata", json.dumps(batch["metadata"])))
    errors = (batch.get("errors") or {}).get("data") or []
    fields.append(("errors", str(len(errors)) if errors else "none"))
    text = "\n".join(f"{k + ':':<16}{v}" for k, v in fields)
    for e in errors[:20]:
        line = f"line {e['line']}: " if e.get("line") is not None else ""
        text += f"\n  {line}{e.get('code')}: {e.get('message')}"
    if len(errors) > 20:
        text += f"\n  ... {len(errors) - 20} more (--json shows all)"
    return text


def cancel_command(client: ApiClient, args: argparse.Namespace) -> int:
    batch = client.request("POST", f"/batches/{_q(args.batch_id)}/cancel")
    print(f"{batch['id']} {batch['status']}")
    return EXIT_OK
