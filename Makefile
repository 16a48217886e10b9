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

.PHONY: install test test-fast lint bench demo study contrast clean

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

# A whole study: law, choice, final network, and with CEUS= the contrast study too.
# `make study CAMUS=/path/to/CAMUS` has settings sized for one GPU; every setting is a
# variable (make study CAMUS=... WIDTHS=4,8 STEPS=500). See README, "A whole study".
E := $(BIN)/echoscale
STUDY ?= runs/study
CAMUS ?=
CEUS ?=
SIZE ?= 256
VAL ?= 0.1
TEST ?= 0.2
WIDTHS ?= 4,8,16,32,64
DEPTH ?= 4
FRACTIONS ?= 0.1,0.2,0.35,0.6
SEEDS ?= 0,1,2
STEPS ?= 4000
EVAL ?= 200
LR ?= 2e-3
BATCH ?= 8
JOBS ?= 1
BOOT ?= 1000
METRIC ?= test_loss
CEUS_SIZE ?= 256
CEUS_TEST ?= 0.25
CEUS_STEPS ?= $(STEPS)
# the contrast sweep: few cases, so one seed; its laws keep the CAMUS exponents
CEUS_WIDTHS ?= $(WIDTHS)
CEUS_FRACTIONS ?= 0.25,0.5,1
CEUS_SEEDS ?= 0
MARGIN ?= 20%
SWEEP_ARGS ?=
# when no law can be fitted, choose on the losses measured at the largest fraction
SELECT_ARGS ?= --fallback-measured
# both mask sets alike: 2 mm off each region keeps the bright blood pool out (make bench)
PERFUSE_ARGS ?= --erode 2
# the key of the model that `train --from-selection` trains
KEY = $$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' \
	$(STUDY)/camus/selection.json)
CEUS_KEY = $$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' \
	$(STUDY)/ceus/selection.json)

study: install
	@test -n "$(CAMUS)" || { echo "usage: make study CAMUS=/path/to/CAMUS [CEUS=/path/to/contrast-cases]" >&2; exit 2; }
	$(E) prepare camus $(CAMUS) $(STUDY)/camus --size $(SIZE) --val $(VAL) --test $(TEST) \
		--skip-incomplete
	$(E) sweep $(STUDY)/camus --widths $(WIDTHS) --depths $(DEPTH) --fractions $(FRACTIONS) \
		--seeds $(SEEDS) --max-steps $(STEPS) --eval-every $(EVAL) --lr $(LR) \
		--batch-size $(BATCH) --jobs $(JOBS) $(SWEEP_ARGS)
	$(E) fit-law $(STUDY)/camus --bootstrap $(BOOT) --metric $(METRIC)
	$(E) select $(STUDY)/camus $(SELECT_ARGS)
	$(E) train $(STUDY)/camus --from-selection $(STUDY)/camus/selection.json
	$(E) compare $(STUDY)/camus/models/$(KEY) $(STUDY)/camus --out $(STUDY)/compare/camus
	@if [ -n "$(CEUS)" ]; then $(MAKE) --no-print-directory contrast; fi
	$(E) report $(STUDY)

# The contrast study (after the CAMUS one, whose law it borrows): a small sweep on the
# contrast loops, its laws refitted with the CAMUS exponents (only the levels are
# free), the size chosen by those, trained on every training loop; then every test
# loop segmented and perfused with the predicted and with the manual masks.
contrast: install
	@test -n "$(CEUS)" || { echo "usage: make contrast STUDY=... CEUS=/path/to/contrast-cases" >&2; exit 2; }
	@test -f $(STUDY)/camus/law.json || { echo "make contrast: no $(STUDY)/camus/law.json; run make study first" >&2; exit 2; }
	$(E) prepare ceus $(CEUS) $(STUDY)/ceus --size $(CEUS_SIZE) --val $(VAL) --test $(CEUS_TEST)
	$(E) sweep $(STUDY)/ceus --widths $(CEUS_WIDTHS) --depths $(DEPTH) \
		--fractions $(CEUS_FRACTIONS) --seeds $(CEUS_SEEDS) --max-steps $(CEUS_STEPS) \
		--eval-every $(EVAL) --lr $(LR) --batch-size $(BATCH) --jobs $(JOBS) $(SWEEP_ARGS)
	$(E) fit-law $(STUDY)/ceus --bootstrap $(BOOT) --metric $(METRIC) \
		--transfer-from $(STUDY)/camus/law.json
	$(E) select $(STUDY)/ceus --transfer $(SELECT_ARGS)
	$(E) train $(STUDY)/ceus --from-selection $(STUDY)/ceus/selection.json
	set -e; for case in $$($(E) cases $(STUDY)/ceus --split test); do \
		name=$$(basename $$case); \
		$(E) segment $(STUDY)/ceus/models/$(CEUS_KEY) $$case/cine.* --out $(STUDY)/segment \
			--keep-largest; \
		$(E) perfuse $$case/cine.* $(STUDY)/segment/$$name \
			--out $(STUDY)/perfusion/auto/$$name $(PERFUSE_ARGS); \
		$(E) perfuse $$case/cine.* $$case/masks* --out $(STUDY)/perfusion/manual/$$name \
			$(PERFUSE_ARGS); \
	done
	$(E) compare $(STUDY)/segment $(CEUS) --kind masks --out $(STUDY)/compare/contrast
	$(E) compare $(STUDY)/perfusion/auto $(STUDY)/perfusion/manual --margin $(MARGIN) \
		--out $(STUDY)/compare/perfusion

# The main job: the same study on data the project makes itself, sized for a 2-core
# CPU (under 10 minutes). Rerunning it reuses what is finished; rm -rf runs/demo to
# start afresh.
DEMO ?= runs/demo
DEMO_SETTINGS = SIZE=40 WIDTHS=4,8,16 DEPTH=3 FRACTIONS=0.04,0.15,0.3,0.45,0.6 \
	SEEDS=0,1 STEPS=300 EVAL=50 LR=6e-3 BATCH=8 JOBS=2 BOOT=200 METRIC=dice_error \
	CEUS_SIZE=48x64 CEUS_STEPS=150 CEUS_WIDTHS=8,16 CEUS_FRACTIONS=0.4,1
demo: install
	$(E) phantom $(DEMO)/data --patients 40 --ceus-cases 8 --seed 0
	$(MAKE) --no-print-directory study STUDY=$(DEMO) CAMUS=$(DEMO)/data/camus \
		CEUS=$(DEMO)/data/ceus $(DEMO_SETTINGS)

clean:
	rm -rf $(VENV) bench .pytest_cache .ruff_cache *.egg-info
