# The README's commands. Everything runs from the project's own virtualenv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo dev test test-fast bench lint screenshots

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

# The Postgres tests (tests/test_postgres_instance.py) start a server of their own from initdb and pg_ctl:
# Debian's postgresql is installed when neither is found and this runs as root; otherwise they skip, saying why.
# The sources are compiled first: the suite starts several hundred Python processes, and where PYTHONDONTWRITEBYTECODE
# is set (a fresh clone, CI) each of them would compile the modules it imports again (0.1-0.2 s of CPU each).
# `--dist loadgroup` hands tests out one at a time (tests/conftest.py keeps a module whose tests share a server
# or an ingested home on one worker), so the workers end together instead of one finishing a long chunk alone.
test: install  ## the test suite: three workers on two cores, since the longest tests mostly wait (daemon, servers)
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
		|| { apt-get update && apt-get install -y --no-install-recommends postgresql; }
	$(BIN)/python -m compileall -q pipelines resources bench tests
	$(BIN)/pytest -n 3 --dist loadgroup

test-fast: install  ## the unit tests only: the inner loop (no subprocess, server or Dagster run)
	$(BIN)/python -m compileall -q pipelines resources bench tests
	$(BIN)/pytest -n 2 --dist loadgroup -m "unit and not integration and not e2e"

bench: install  ## benchmarks: prints tables, writes bench/results/*.json
	$(BIN)/python -m bench

# The UI screenshots in docs/dagster.md: Chromium from Debian packages (apt-get needs root; skipped when
# $(CHROMIUM) is there) driven by playwright-core from npm, installed into the ignored $(NODE_PREFIX)/.
CHROMIUM ?= /usr/bin/chromium
NODE_PREFIX ?= .node
PLAYWRIGHT_CORE ?= playwright-core@1.65.1

screenshots: install  ## retake tests/screenshots/*.png from a real `sessionlake dev` (not part of `make test`)
	test -x $(CHROMIUM) || { apt-get update && apt-get install -y chromium; }
	test -d $(NODE_PREFIX)/node_modules/playwright-core || npm install --prefix $(NODE_PREFIX) --no-save \
		--no-package-lock --no-audit --no-fund $(PLAYWRIGHT_CORE)
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m tests.screenshots.take --node-path $(NODE_PREFIX)/node_modules

lint: install
	$(BIN)/ruff check .
