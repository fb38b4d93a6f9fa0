# One-command entry points (see README.md). Every target sets up .venv first.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup test test-all test-gpu notebooks docs demo organisms

setup:
	bash scripts/setup.sh

# What CI runs (.ci/run): the documentation build, then the test suite and the tutorial notebooks.
test: setup
	.venv/bin/mkdocs build --strict
	.venv/bin/python -m pytest -q --nbmake --nbmake-timeout=600 tests notebooks

test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow" --nbmake --nbmake-timeout=600 tests notebooks

# CUDA against CPU on the tiny organisms (tests/test_cuda.py); needs a GPU
test-gpu: setup
	.venv/bin/python -m pytest -q -m gpu tests/test_cuda.py

# Execute the notebooks (outputs are not written back: the stored notebooks stay without outputs).
notebooks: setup
	.venv/bin/python -m pytest -q --nbmake --nbmake-timeout=600 notebooks

# The documentation site, into site/ (warnings are errors).
docs: setup
	.venv/bin/mkdocs build --strict

demo: setup
	.venv/bin/safeseek demo --out runs/demo

organisms: setup
	.venv/bin/python -m safeseek_tl.organisms.build
