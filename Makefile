# One-command entry points (see README.md). Every target sets up .venv first.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: setup test test-all demo organisms

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow"

demo: setup
	.venv/bin/safeseek demo --out runs/demo

organisms: setup
	.venv/bin/python -m safeseek_tl.organisms.build
