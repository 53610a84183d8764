# mod-arch companion: every target a user or CI needs. `make help` lists them.
# The virtual environment is created on first use, from pyproject.toml (the single source of
# truth for dependencies), constrained by requirements-lock.txt (exact versions that were tested).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite runs on TEST_WORKERS pytest-xdist workers (whole files per worker: module fixtures such
# as the book build stay in one process), each with TEST_THREADS torch/OpenMP threads: on two cores,
# two 1-thread workers never wait on a descheduled second thread. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
	$(BIN)/python -m mod_arch_core.models.kernels
	@touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment (.venv) if missing

.PHONY: lint
lint: $(STAMP) ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: $(STAMP) ## Apply ruff's formatter and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: lint ## Lint, then run the whole test suite (slow tests included) on TEST_WORKERS=2 workers
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: lint ## Lint, then run the tests not marked slow
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

.PHONY: lock
lock: $(STAMP) ## Refresh requirements-lock.txt from the current environment
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' \
		| sed -E 's/^(torch==[0-9.]+)\+[a-z0-9]+$$/\1/' > requirements-lock.txt

.PHONY: book
book: $(STAMP) ## Execute the notebooks (papermill, cached) and build the site into _build/html
	$(BIN)/python -m mod_arch_core.book all

.PHONY: student
student: $(STAMP) ## Write the student versions of the chapters (solutions -> prompts) into book/student/
	$(BIN)/python -m mod_arch_core.coursekit student

PROFILE ?= quick

.PHONY: figures
figures: $(STAMP) ## Sweep PROFILE (default quick) into results/PROFILE, collect, rebuild the book on it
	$(BIN)/python -m mod_arch_core sweep --profile $(PROFILE) --out results/$(PROFILE) --no-collect
	$(BIN)/python -m mod_arch_core collect results/$(PROFILE) --profile $(PROFILE)
	$(BIN)/python -m mod_arch_core.book all --param results_path=$(CURDIR)/results/$(PROFILE)

BENCH_ARGS ?=

.PHONY: bench
bench: $(STAMP) ## Time training steps: reference-style loop vs the engine at N=1, 6, 25, batch 64 and 256
	$(BIN)/python benchmarks/bench_training.py $(BENCH_ARGS)

.PHONY: serve
serve: ## Serve the built site at http://127.0.0.1:8000
	$(PYTHON) -m http.server 8000 --bind 127.0.0.1 --directory _build/html

.PHONY: clean
clean: ## Remove build outputs (keeps .venv and results/)
	rm -rf _build book/executed .pytest_cache .ruff_cache .hypothesis

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'
