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

.PHONY: install test test-fast lint bench demo clean

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

# The study so far, on data the project makes itself (later stages join as they land).
DEMO ?= runs/demo
demo: install
	$(BIN)/echoscale phantom $(DEMO)/data --patients 20 --ceus-cases 4
	$(BIN)/echoscale prepare camus $(DEMO)/data/camus $(DEMO)/camus --size 128 --sequences
	$(BIN)/echoscale prepare ceus $(DEMO)/data/ceus $(DEMO)/ceus --size 128
	$(BIN)/echoscale train $(DEMO)/camus --width 8 --depth 4 --max-steps 300 \
		--eval-every 50
	@echo "demo: every table and model is in $(DEMO)/"

clean:
	rm -rf $(VENV) bench .pytest_cache .ruff_cache *.egg-info
