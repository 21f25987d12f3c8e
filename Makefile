# The two quick-start commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The command line (core.cli), run from this checkout: the same as $(VENV)/bin/ccxt-trading-webhook.
CLI := $(PY) -m core
HOST ?= $(shell grep -s '^HOST=' .env | cut -d= -f2)
PORT ?= $(shell grep -s '^PORT=' .env | cut -d= -f2)

.PHONY: run check-config lint test test-fast emulator bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, this is " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[redis]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,redis]'
	touch $@

.env: | $(VENV)/.installed
	$(CLI) init

## Install, write .env (paper exchange, random WEBHOOK_SECRET) and serve on 127.0.0.1:8000
## (a configuration mistake stops it with one line and a failure status).
run: $(VENV)/.installed .env
	$(CLI) serve --bind $(or $(HOST),127.0.0.1):$(or $(PORT),8000)

## The configuration's verdict without starting the server.
check-config: $(VENV)/.installed .env
	$(CLI) check-config

## Install and run the whole test suite (slow fault/load tests included).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2

## The suite without the slow fault/load tests.
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 -m 'not slow'

## The exchange emulator on 127.0.0.1:9000.
# ruff, the formatter's check, mypy and the docs site, as CI runs them before the suite.
lint: $(VENV)/.installed-test
	$(PY) -m pip install --quiet -e '.[lint,docs]'
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

emulator: $(VENV)/.installed-test
	$(CLI) emulator --port 9000

## The benchmark (bench/results/latest.json).
bench: $(VENV)/.installed-test
	$(CLI) bench

clean:
	rm -rf $(VENV) data
