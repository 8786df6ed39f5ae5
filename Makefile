# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= .hartonomous
HOST   ?= 127.0.0.1
PORT   ?= 7071

.PHONY: run test lint sql bench clean

# The venv is rebuilt only when pyproject.toml changes (stamp files).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,local]'
	touch $(VENV)/.installed $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed
	$(BIN)/hartonomous init --data-dir $(DATA) --demo-tenant demo
	$(BIN)/hartonomous serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# Regenerate sql/ from the Alembic migrations (a test fails when it is stale).
sql: $(VENV)/.installed-dev
	$(BIN)/python -m hartonomous.store.sqlgen sql

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/upload_throughput.py --size-gib 2
	$(BIN)/python bench/workflows.py

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
