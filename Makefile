# The two commands (README): `make serve` and `make test`. Everything installs into .venv.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loramux-installed
DEMO ?= .demo
HOST ?= 127.0.0.1
PORT ?= 8000
# The demo's base: tiny (built offline in seconds) or smollm2 (SmolLM2-135M-Instruct from PyPI).
BASE ?= tiny
# Test processes (pytest-xdist): two fit these 2-core machines (each worker's vLLM engine gets a core).
WORKERS ?= 2

.PHONY: install lock serve test test-unit test-readme bench clean

install: $(STAMP)

$(STAMP): pyproject.toml locks/cpu.txt scripts/install.sh
	PY=$(PY) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

# Recompile locks/*.txt after editing dependencies in pyproject.toml; UPGRADE=NAME (or all) moves pins.
lock:
	VENV=$(VENV) UPGRADE=$(UPGRADE) bash scripts/lock.sh

serve: install
	DEMO=$(DEMO) HOST=$(HOST) PORT=$(PORT) BASE=$(BASE) VENV=$(VENV) bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -ra -n $(WORKERS) --durations=15 $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -ra -m "not integration" $(PYTEST_ARGS)

test-readme: install
	$(BIN)/python -m pytest -ra -m readme $(PYTEST_ARGS)

bench: install
	$(BIN)/python tests/bench/bench_overhead.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
