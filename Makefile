# echoscale: install, test, lint, benchmark.
# `make install` builds .venv with the CPU build of torch; for a CUDA build see README.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip takes this build first, so the package's own torch requirement installs nothing
# more. Elsewhere: make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-fast lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[plot,dicom,test]'
	$(BIN)/echoscale --version
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check echoscale tests
	$(BIN)/ruff format --check echoscale tests

bench: install
	$(BIN)/python -m tests.benchmarks.run --out bench/report.json

clean:
	rm -rf $(VENV) bench .pytest_cache .ruff_cache *.egg-info
