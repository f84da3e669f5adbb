# retrofit: set-up, tests, demo, benchmarks. Run `make setup` once, then `make test` / `make demo`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# Local copies of the public datasets (this repo's CI and tests); without them the demo downloads
# GSM8K from the Hub (so the Hub is switched offline only when the local copies exist; the tests
# always run offline, see tests/conftest.py).
SHARED_DATA := $(abspath ../shared/data)
export RETROFIT_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
ifneq ($(wildcard $(SHARED_DATA)),)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh "$(PY)" "$(VENV)"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check retrofit tests eval scripts
	$(BIN)/ruff format --check retrofit tests eval scripts

demo: $(STAMP)
	$(BIN)/retrofit demo $(if $(DEMO_SMOKE),--smoke,)

bench: $(STAMP)
	$(BIN)/retrofit bench all

clean:
	rm -rf $(VENV) demo-out .pytest_cache
