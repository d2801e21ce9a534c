# The README's commands. Everything runs from the project's own virtualenv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo dev test bench lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install  ## ingest the sample sessions into a temp home and print usage reports
	$(BIN)/sessionlake demo

dev: install  ## the Dagster UI and daemon on 127.0.0.1:3000
	$(BIN)/sessionlake dev

test: install  ## the test suite
	$(BIN)/pytest

bench: install  ## benchmarks: prints tables, writes bench/results/*.json
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
