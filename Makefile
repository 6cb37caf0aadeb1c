# prresq: every target creates the virtual environment when it is missing.
PY_BOOT ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
RUFF    := $(VENV)/bin/ruff
STAMP   := $(VENV)/.installed
ARGS    ?=

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# DeepSpeed without its compiled ops (they build just in time on a GPU): lets the CPU tests check the
	# config Lightning's DeepSpeed strategy receives (gradient clipping). No build isolation: it needs our torch.
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation "deepspeed>=0.16"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install prresq with the dev extra (CPU; pinned torch)

train: $(STAMP) ## Main job: tiny model + synthetic data, warm-up, RL2R training, held-out SRCC/PLCC before/after (CPU, offline)
	$(PY) -m prresq.train experiment=tiny_synthetic $(ARGS)

test: $(STAMP) ## Run the test suite (~6-8 min on 2 cores; tests that need CUDA skip themselves with the reason)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -rs $(ARGS)

test-fast: $(STAMP) ## The quick loop: skip the slow tests (every experiment's fast_dev_run) too
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow and not gpu and not slurm" $(ARGS)

# lint and format need ruff only: no reinstall of the project when pyproject.toml changed.
$(RUFF):
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q "ruff>=0.6"

lint: $(RUFF) ## ruff check + format check (installs ruff alone if missing)
	$(RUFF) check prresq hydra_plugins tests experiments
	$(RUFF) format --check prresq hydra_plugins tests experiments

format: $(RUFF) ## ruff format + autofix
	$(RUFF) format prresq hydra_plugins tests experiments
	$(RUFF) check --fix prresq hydra_plugins tests experiments

bench: $(STAMP) ## Run the benchmarks under experiments/bench (print figures)
	$(PY) experiments/bench/bench_preresq_rewards.py

clean: ## Remove caches, outputs and the virtual environment
	rm -rf $(VENV) .cache outputs multirun .pytest_cache .ruff_cache build *.egg-info

.PHONY: help install train test test-fast lint format bench clean
