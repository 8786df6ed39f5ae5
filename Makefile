# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= .hartonomous
HOST   ?= 127.0.0.1
PORT   ?= 7071

.PHONY: run test lint sql bench clean redis llama-server localstripe

# The venv is rebuilt only when pyproject.toml changes (stamp files).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python is compiled here without OpenMP, once (about 8 minutes), into a folder
# outside the clone that later installs reuse. torch ships a libgomp.so.1 too, so with
# OpenMP both would share one runtime, whose barriers stop spinning once torch's thread
# pools exist: llama.cpp ran 10% slower in a server that had embedded (docs/generation.md).
# Its vendored llama.cpp is patched first (scripts/llama-patches, docs/serving.md); the build
# is named by the number of patches, so a patch is changed by adding one, never by editing.
LLAMA_VERSION := 0.3.36
LLAMA_BUILD := $(LLAMA_VERSION)+hartonomous$(words $(wildcard scripts/llama-patches/*.patch))
WHEELS ?= $(HOME)/.cache/hartonomous/wheels
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_BUILD)-no-openmp

$(LLAMA_WHEEL): | $(BIN)/python
	mkdir -p $(WHEELS)
	rm -rf $(WHEELS)/.src
	SRC=$$(LLAMA_VERSION=$(LLAMA_VERSION) scripts/llama-source.sh $(WHEELS)/.src $(BIN)/pip) && \
		CMAKE_ARGS="-DGGML_OPENMP=OFF" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
		"$$SRC" -w $(WHEELS)
	rm -rf $(WHEELS)/.src
	touch $@

# llama.cpp's own server (HARTONOMOUS_INFERENCE_ENGINE=llama-server: slots batch concurrent
# generations), built once from the llama.cpp that llama-cpp-python's sdist vendors, patched
# alike, with the same no-OpenMP flags, the server target only (24 CPU minutes: about 13 on 2
# idle cores), cached outside the clone.
LLAMA_SERVER_CACHE ?= $(HOME)/.cache/hartonomous/llama-server
LLAMA_SERVER := $(LLAMA_SERVER_CACHE)/$(LLAMA_BUILD)/llama-server

$(LLAMA_SERVER): | $(BIN)/python
	LLAMA_VERSION=$(LLAMA_VERSION) LLAMA_SERVER_CACHE=$(LLAMA_SERVER_CACHE) \
		scripts/build-llama-server.sh $(BIN)/pip

llama-server: $(LLAMA_SERVER)

$(VENV)/.installed: pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(BIN)/pip install --quiet --find-links $(WHEELS) \
		'llama-cpp-python==$(LLAMA_BUILD)' -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(BIN)/pip install --quiet --find-links $(WHEELS) \
		'llama-cpp-python==$(LLAMA_BUILD)' -e '.[dev,local]'
	touch $(VENV)/.installed $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's redis-server: the admission tests start one (the limiters' state on Azure is Azure
# Managed Redis). Installed once; nothing happens when it is there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq redis-server; }

# localstripe, a stateful Stripe-protocol server (PyPI), for the billing tests: in a venv of
# its own outside the clone (it is a server we talk to, not a library the app imports, and
# its aiohttp pin stays out of the app's environment). Installed once per version.
LOCALSTRIPE_VERSION := 1.15.10
LOCALSTRIPE_VENV := $(HOME)/.cache/hartonomous/localstripe/$(LOCALSTRIPE_VERSION)
LOCALSTRIPE := $(LOCALSTRIPE_VENV)/bin/localstripe

$(LOCALSTRIPE):
	$(PYTHON) -m venv $(LOCALSTRIPE_VENV) || python3 -m venv $(LOCALSTRIPE_VENV)
	$(LOCALSTRIPE_VENV)/bin/pip install --quiet 'localstripe==$(LOCALSTRIPE_VERSION)'

localstripe: $(LOCALSTRIPE)

run: $(VENV)/.installed
	$(BIN)/hartonomous init --data-dir $(DATA) --demo-tenant demo
	$(BIN)/hartonomous serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev node_modules/.installed $(LLAMA_SERVER) $(LOCALSTRIPE) redis
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	HARTONOMOUS_TEST_LOCALSTRIPE=$(LOCALSTRIPE) $(BIN)/pytest

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
