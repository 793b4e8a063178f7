"""The `runner` command: serve | engine | run | check-config | submit | status | cancel.

ConfigError -> one line, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from runner.errors import ConfigError
from runner.settings import Settings, load_settings

logger = logging.getLogger("runner")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", dest="data_dir", help="data folder (RUNNER_DATA_DIR, default ./data)")
    p.add_argument("--models", dest="models_path", help="models.yaml (RUNNER_MODELS, default ./models.yaml)")
    p.add_argument("--log-level", dest="log_level", help="log level (RUNNER_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner", description="OpenAI-compatible batch runner")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API and the engine process")
    _common(serve)
    serve.add_argument("--host", help="bind address (RUNNER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (RUNNER_PORT, default 8000)")
    serve.add_argument("--backend", help="override every model's backend, e.g. simulated (RUNNER_BACKEND)")
    serve.add_argument("--no-engine", dest="engine", action="store_false", default=None,
                       help="run the API only (RUNNER_ENGINE=0)")

    engine = sub.add_parser("engine", help="run only the engine process (started by `serve`)")
    _common(engine)
    engine.add_argument("--backend", help="override every model's backend (RUNNER_BACKEND)")
    engine.add_argument("--parent-pid", dest="parent_pid", type=int,
                        help="exit when this process (the API that started the engine) is gone")

    check = sub.add_parser("check-config", help="validate the settings and models.yaml, then exit")
    _common(check)

    from runner.batch_cli import add_run_parser  # noqa: PLC0415 - keeps `run`'s flags beside its code

    add_run_parser(sub)

    from runner.submit import add_client_parsers  # noqa: PLC0415 - submit/status/cancel: a client's flags

    add_client_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args._extra = extra  # `runner run` passes unknown --flags to the backend as engine_args
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items()
        if k in Settings.__dataclass_fields__ and v is not None
    }
    try:
        if args.command == "run":
            from runner.batch_cli import run_command  # noqa: PLC0415

            sys.exit(run_command(args))
        if args.command in ("submit", "status", "cancel"):
            from runner.submit import EXIT_INTERRUPTED, run_client_command  # noqa: PLC0415

            try:
                sys.exit(run_client_command(args))
            except KeyboardInterrupt:  # outside --wait's own handling (an upload, a download)
                print("runner: interrupted", file=sys.stderr)
                sys.exit(EXIT_INTERRUPTED)
        settings = load_settings(overrides)
        if args.command == "serve":
            serve(settings)
        elif args.command == "engine":
            from runner.engine.main import run_engine  # noqa: PLC0415 - the API never imports the engine

            run_engine(settings, parent_pid=args.parent_pid)
        elif args.command == "check-config":
            check_config(settings)
    except ConfigError as exc:
        print(f"runner: error: {exc}", file=sys.stderr)
        sys.exit(2)


def check_config(settings: Settings) -> None:
    """`runner check-config`: every check `serve` runs at start, without starting anything."""
    from runner.model_specs import load_model_specs  # noqa: PLC0415
    from runner.preflight import preflight  # noqa: PLC0415

    registry = load_model_specs(settings.models_path)
    for note in preflight(settings, registry):
        print(f"note: {note}")
    print(f"ok: {len(registry.specs)} models ({', '.join(registry.ids)}); data dir {settings.data_dir}")


def serve(settings: Settings) -> None:
    from runner.api import http_server  # noqa: PLC0415
    from runner.api.app import create_app  # noqa: PLC0415
    from runner.api.connections import protocol_class  # noqa: PLC0415
    from runner.log import configure_logging  # noqa: PLC0415
    from runner.model_specs import load_model_specs  # noqa: PLC0415
    from runner.preflight import preflight  # noqa: PLC0415
    from runner.supervisor import engine_supervisor  # noqa: PLC0415

    configure_logging(settings.log_level, process="api")
    registry = load_model_specs(settings.models_path)
    # The same checks as check-config, before anything binds or starts (#11): a config that cannot
    # work exits 2 with one line, instead of a healthy server whose batches all fail.
    for note in preflight(settings, registry, models=settings.engine):
        logger.warning("%s", note)
    if not settings.api_keys:
        logger.warning("no API keys configured (RUNNER_API_KEYS): serving loopback clients only on %s:%d",
                       settings.host, settings.port)
    app = create_app(settings, registry, background=engine_supervisor(settings) if settings.engine else None)
    # uvicorn's httptools parser and uvloop (both dependencies, so "auto" picks them), with runner's
    # limits on header size, header time and open connections (api/connections.py, #14), on a server
    # that ticks once a second, not ten times (api/http_server.py).
    http_server.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=5, http=protocol_class(settings),
                timeout_keep_alive=settings.keep_alive_timeout)  # type: ignore[arg-type]
