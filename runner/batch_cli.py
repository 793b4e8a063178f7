"""`runner run`: the engine without the server, a drop-in for `vllm run-batch` (work in progress)."""

from __future__ import annotations

import argparse
from typing import Any


def add_run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run one batch file offline (like vllm run-batch)")
    run.add_argument("-i", "--input-file", dest="input_file", required=True)
    run.add_argument("-o", "--output-file", dest="output_file", required=True)


def run_command(args: argparse.Namespace) -> int:
    raise NotImplementedError
