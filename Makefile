# fbr developer commands. `make demo` and `make test` are all a fresh clone needs (Python >= 3.11).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-run `pip install` only when pyproject.toml changes.
STAMP := $(VENV)/.fbr-installed

.PHONY: venv demo test lint bench

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: fbr needs Python >= 3.11, but PYTHON=$(PYTHON) is '$$($(PYTHON) --version 2>&1)'." >&2; \
	  echo "Fix: make $(MAKECMDGOALS) PYTHON=python3.11 (or any Python >= 3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

demo: venv
	$(BIN)/fbr demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n auto --maxprocesses 4 --dist loadfile

bench: venv
	$(BIN)/python benchmarks/solve_speed.py
