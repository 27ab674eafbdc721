# SkinDX: `make run` rebuilds the model and serves the stack; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
STAMP     := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK := true
PYTEST_ARGS ?=
HTTP_PORT ?= $(or $(SKINDX_HTTP_PORT),8080)
MODEL_DIR := serving/model

.PHONY: help install system-deps params run repro serve serve-api test test-fast lint bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

system-deps: ## Debian packages for the stack and the tests (nginx, chromium, chromedriver, docker-compose)
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): requirements/train.txt serving/requirements.txt app/requirements.txt pyproject.toml
	@test -x $(PIP) || python3 -m venv --clear $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/train.txt
	$(PIP) install -q --no-deps -e .
	@touch $(STAMP)

install: system-deps $(STAMP) ## create .venv and install the pinned set (idempotent)
	@test -d .dvc || $(VENV)/bin/dvc init -q

params: $(STAMP) ## recompose params.yaml from conf/ (Hydra)
	$(PY) -m skindx.config

repro: install ## rebuild the model: dvc repro (demo profile)
	$(VENV)/bin/dvc repro
	@echo; echo "outputs: data/raw data/processed models/ reports/ serving/model/  (dvc metrics show, dvc plots show)"

run: install ## install, rebuild the model unless it is up to date, serve the stack on one port
	@if [ -f $(MODEL_DIR)/model.json ] && $(VENV)/bin/dvc status -q >/dev/null 2>&1; then \
	  echo "promoted model in $(MODEL_DIR) is up to date (dvc status): not retraining"; \
	else \
	  $(MAKE) --no-print-directory repro; \
	fi
	$(MAKE) --no-print-directory serve

serve: install ## serve the stack (nginx, API, UI, MLflow) at one URL without retraining; Ctrl-C stops it
	SKINDX_HTTP_PORT=$(HTTP_PORT) $(PY) -m skindx.stack

serve-api: install ## the API alone on 127.0.0.1:8000
	$(VENV)/bin/uvicorn serving.app:app --host 127.0.0.1 --port $${PORT:-8000}

test: install ## install everything, then run every test
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## the tests without the slow ones
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src pipelines serving app bench tests scripts
	$(VENV)/bin/ruff format --check src pipelines serving app bench tests scripts

bench: install ## benchmarks (write bench/results/*.json)
	$(PY) bench/train_throughput.py
	$(PY) bench/serving.py

clean: ## remove pipeline outputs (not the venv)
	rm -rf data/raw data/processed models reports site .run
