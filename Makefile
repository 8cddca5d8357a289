# `make figures` reproduces the figures, `make test` checks that everything still works (CI runs it).
# Both first set up .venv from requirements.txt (the only place versions are pinned) and the system
# packages headless MuJoCo needs.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Variables to set on the command line: the interpreter that creates .venv (3.11 or newer), the experiment
# scale (ci | laptop | long | paper, defined in nelib/runner/presets.py), TRAIN=1 to train the runs a notebook
# needs that are not stored (by default figures are drawn from the stored runs only, and a notebook with
# none is skipped with a message), and FRESH=1 (with TRAIN=1) to re-train stored runs too.
PYTHON ?= python3
PRESET ?= laptop
FRESH ?= 0
TRAIN ?= $(if $(filter ci,$(PRESET)),1,0)
STORED ?= 0

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
FRESH_BOOL := $(if $(filter 1 true True yes,$(FRESH)),True,False)
# STORED=1 is the default now (kept so that older commands still work).
TRAIN_BOOL := $(if $(filter 1 true True yes,$(STORED)),False,$(if $(filter 1 true True yes,$(TRAIN)),True,False))

.PHONY: help setup preset test figures results lint bench bench-pixels bench-vectorized bench-adam clean

help:
	@echo "make figures [PRESET=ci|laptop|long|paper] [TRAIN=1 [FRESH=1]]  run notebooks/NN_*.ipynb on the stored runs"
	@echo "make test                                       unit tests and notebooks on the ci preset"
	@echo "make results                                   rewrite RESULTS.md, the README's summary and data/README.md from data/runs/"
	@echo "make lint | make bench | make bench-pixels | make bench-vectorized | make bench-adam | make clean"

# The stamp is older than requirements.txt when the pins change, which re-runs the install. pip's cache is
# kept, so a rebuild downloads nothing it already has.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	@touch $@

setup: $(STAMP)
	@$(PY) -m scripts.system

# Unknown presets stop here with one line, before anything runs. The names live in nelib/runner/presets.py only.
preset: setup
	$(eval PRESET_ERROR := $(shell $(PY) -m nelib.runner.presets '$(PRESET)' 2>&1 >/dev/null))
	$(if $(PRESET_ERROR),$(error $(PRESET_ERROR)))

# The committed runs are verified first (checksums, rows, configs): a damaged result fails the build.
test: setup
	$(PY) -m nelib.runner.store --check data
	NELIB_PRESET=ci $(PY) -m pytest --durations=5 tests
	NELIB_PRESET=ci $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/

# Executed copies go to build/notebooks/, so the sources keep no outputs. --cwd notebooks: the kernel
# runs where Jupyter and nbval run it. scripts.run_notebook is papermill with the kernel on local Unix
# sockets instead of TCP (no "running over TCP without encryption" warning per notebook).
figures: preset
	@mkdir -p build/notebooks
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb (preset $(PRESET), fresh $(FRESH_BOOL), train $(TRAIN_BOOL))"; \
	  if ! $(PY) -m scripts.run_notebook --cwd notebooks -p preset $(PRESET) -p fresh $(FRESH_BOOL) \
	      -p train $(TRAIN_BOOL) "$$nb" "build/$$nb"; then \
	    if [ $(TRAIN_BOOL) = False ] && grep -q NoStoredRuns "build/$$nb"; then \
	      echo "   skipped: no stored runs for this notebook"; else exit 1; fi; \
	  fi; \
	done

# RESULTS.md, the README's summary table and data/README.md's index of runs, generated from the stored runs
# (tests/test_results_page.py fails when they are out of date).
results: setup
	$(PY) -m nelib.report.results --data-index

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m benchmarks.bench

# DrQ on pixels: agent steps/s on dmc:cheetah-run with rendering, replay bytes, reference-style yardstick.
bench-pixels: setup
	$(PY) -m benchmarks.bench_pixels

# Seeds trained together in one process (nelib.runner.vectorized) vs the process pool: aggregate steps/s for K = 1..32.
bench-vectorized: setup
	$(PY) -m benchmarks.bench_vectorized

# One Adam step of a masked layer: torch.optim.Adam against nelib's (same bits, faster square root on zeros).
bench-adam: setup
	$(PY) -m benchmarks.bench_adam

# Build outputs only: .venv, figures/ and data/ (cached results, expensive to recompute) stay.
clean:
	rm -rf build .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \
	  -o -name MUJOCO_LOG.TXT \) -prune -exec rm -rf {} +
