# The README's two commands: `make demo` and `make test`. Both set up .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Keep every local Ray listener on loopback, with an explicit auth mode (see README, "Local Ray").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= disabled
export SEQFORMER_KERNELS_DIR ?= $(CURDIR)/.cache/kernels
PYTEST_ARGS ?=

.PHONY: demo test lint setup clean-venv kernels

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

kernels: $(STAMP)
	$(VENV)/bin/seqformer build-kernels

lint: $(STAMP)
	$(VENV)/bin/ruff check seqformer tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -m "not slow and not cuda" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/seqformer demo

clean-venv:
	rm -rf $(VENV)
