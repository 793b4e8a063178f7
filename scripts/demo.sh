#!/usr/bin/env bash
# Set up (first time) and run the main job: a sample batch through the real small model on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
