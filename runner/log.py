"""configure_logging: the only place logging is set up."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info", *, process: str = "api") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
