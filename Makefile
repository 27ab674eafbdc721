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
MODEL_DIR := serving/model
# containers: compose v2 (`docker compose`) where the plugin exists, else docker-compose v1
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# the trainer writes into the checkout as the checkout's owner (docs/stack.md)
export SKINDX_UID ?= $(shell id -u)
export SKINDX_GID ?= $(shell id -g)

PHONY_MINE := model api-image up down secrets
.PHONY: $(PHONY_MINE) monitor help install system-deps params run repro serve serve-api test test-fast lint bench docs clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

system-deps: ## Debian packages for the stack and the tests (nginx, chromium, chromedriver, docker compose)
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): requirements/dev.txt requirements/monitor.txt requirements/pipeline.txt requirements/torch.txt requirements/docs.txt requirements/notebook.txt serving/requirements.txt app/requirements.txt pyproject.toml
	@test -x $(PIP) || python3 -m venv --clear $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/dev.txt
	$(PIP) install -q --no-deps -r requirements/monitor.txt  # Evidently: see the file
	$(PIP) install -q --no-deps -e .
	@touch $(STAMP)

# promtool checks and unit-tests the Prometheus rules (tests/test_prometheus_rules.py): the binary
# of Debian's prometheus package (the one docker/prometheus.Dockerfile installs), unpacked into the
# venv with apt-get download + dpkg-deb -x, so no daemon and no dependency is installed
PROMTOOL := $(VENV)/bin/promtool
$(PROMTOOL): | $(STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "no apt-get: install promtool (Prometheus 2.x) on PATH for tests/test_prometheus_rules.py"; \
	elif ( cd "$$tmp" && { apt-get download -qq prometheus 2>/dev/null || \
	         { $$SUDO apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } ) \
	     && dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root" \
	     && install -m 755 "$$tmp/root/usr/bin/promtool" $@; then \
	  echo "installed $$($@ --version | head -1) into $(VENV)/bin"; \
	else echo "could not unpack promtool from Debian's prometheus package: tests/test_prometheus_rules.py skips"; fi

install: system-deps $(STAMP) $(PROMTOOL) ## create .venv and install the pinned set (idempotent)
	@test -d .dvc || $(VENV)/bin/dvc init -q

params: $(STAMP) ## recompose params.yaml from conf/ (Hydra)
	$(PY) -m skindx.config

repro: install ## rebuild the model: dvc repro (demo profile)
	$(VENV)/bin/dvc repro
	@echo; echo "outputs: data/raw data/processed models/ reports/ serving/model/  (dvc metrics show, dvc plots show)"

run: install ## install, pull the team's outputs if a DVC remote is set, rebuild what is out of date, serve on one port
	@if $(DVC_REMOTE_READY); then \
	  echo "pulling the pipeline's outputs and run cache from DVC remote '$$($(DVC) remote default)'"; \
	  $(DVC) pull --run-cache || echo "make run: some outputs are not on the remote; dvc repro rebuilds them"; \
	fi
	@if [ -f $(MODEL_DIR)/model.json ] && $(VENV)/bin/dvc status -q >/dev/null 2>&1; then \
	  echo "promoted model in $(MODEL_DIR) is up to date (dvc status): not retraining"; \
	elif $(DVC_REMOTE_READY); then \
	  $(DVC) repro --pull; \
	else \
	  $(MAKE) --no-print-directory repro; \
	fi
	$(MAKE) --no-print-directory serve

# A shared DVC remote (README "Sharing outputs: a DVC remote"). SKINDX_DVC_REMOTE (a path, an
# NFS mount, ssh://host/path, s3://bucket/path) becomes this clone's default remote in
# .dvc/config.local (never committed); without it, the one set with `dvc remote add -d` is used.
# There is no default remote: without either, push and pull say what to set.
.PHONY: push pull
DVC := $(VENV)/bin/dvc
DVC_REMOTE_NAME ?= skindx
DVC_REMOTE_READY = { [ -z "$$SKINDX_DVC_REMOTE" ] || $(DVC) remote add --local --force --default $(DVC_REMOTE_NAME) "$$SKINDX_DVC_REMOTE" >/dev/null; } && $(DVC) remote default >/dev/null 2>&1
DVC_NO_REMOTE = { echo "$@: no DVC remote. Set SKINDX_DVC_REMOTE=/shared/dir (or ssh://host/path, s3://bucket/path), or run: dvc remote add -d NAME URL" >&2; exit 2; }

push: install ## upload the pipeline's outputs and the run cache to the DVC remote (SKINDX_DVC_REMOTE)
	@$(DVC_REMOTE_READY) || $(DVC_NO_REMOTE)
	$(DVC) push --run-cache

pull: install ## fetch the pipeline's outputs and the run cache from the DVC remote (SKINDX_DVC_REMOTE)
	@$(DVC_REMOTE_READY) || $(DVC_NO_REMOTE)
	$(DVC) pull --run-cache

serve: install ## serve the stack (nginx, API, UI, MLflow) at one URL without retraining; Ctrl-C stops it
	$(PY) -m deploy.stack

model: ## make sure a promoted model is in serving/model (runs the pipeline when there is none)
	@if [ -f $(MODEL_DIR)/model.json ]; then \
	  echo "promoted model: $(MODEL_DIR) (version $$(python3 -c 'import json; print(json.load(open("$(MODEL_DIR)/model.json"))["version"])'))"; \
	else \
	  $(MAKE) --no-print-directory install; \
	  if $(DVC_REMOTE_READY); then \
	    echo "no promoted model in $(MODEL_DIR): pulling it (and whatever else is ready) from the DVC remote, building the rest"; \
	    $(DVC) repro --pull; \
	  else \
	    echo "no promoted model in $(MODEL_DIR): running the pipeline to train and promote one (make repro)"; \
	    $(MAKE) --no-print-directory repro; \
	  fi; \
	fi

# The compose stack's secrets: .secrets/*.env (git-ignored, mode 600), generated once and kept
# (docker/stack_secrets.py; ROTATE="pg_predlog ..." makes new ones). Every compose command reads
# them (env_file:), so the compose targets depend on it.
secrets: ## write the compose stack's passwords into .secrets/ (git-ignored) when absent
	@python3 docker/stack_secrets.py $(if $(ROTATE),--rotate $(ROTATE))

api-image: model secrets ## build skindx/api:<registered model version> (OCI labels: model, card sha256, commit, run id)
	@eval "$$(python3 deploy/image.py $(MODEL_DIR))" && \
	  $(COMPOSE) build api && \
	  echo "built skindx/api:$$SKINDX_API_TAG (model $$SKINDX_MODEL_VERSION, card $$SKINDX_CARD_SHA256)"

up: secrets api-image ## the stack in containers: build, start, wait until every service is healthy, print the URL
	@eval "$$(python3 deploy/image.py $(MODEL_DIR))" && \
	  $(COMPOSE) up -d --build --remove-orphans && \
	  python3 deploy/compose_wait.py --compose "$(COMPOSE)"

down: secrets ## stop the containers (make down VOLUMES=1 also deletes the volumes: PostgreSQL's, MLflow's artifacts, the predictions)
	$(COMPOSE) --profile train down --remove-orphans $(if $(VOLUMES),--volumes)

serve-api: install ## the API alone on 127.0.0.1:8000
	$(VENV)/bin/uvicorn serving.app:app --host 127.0.0.1 --port $${PORT:-8000}

monitor: install ## drift and performance report of the prediction log (ARGS="--days 7", "--since 2026-12-01")
	$(PY) -m skindx.monitor $(ARGS)

test: install ## install everything, then run every test
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest $(PYTEST_ARGS)

# test-fast: one worker per core (pytest-xdist; a file's tests stay on one worker, so its module
# fixtures are built once), and Python's bytecode cache on even where the shell turns it off
# (PYTHONDONTWRITEBYTECODE recompiles every imported module per process: ~10 s of collection)
test-fast: install ## the tests without the slow ones (< 2 min on 2 cores; no ../shared needed)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -m "not slow" -n auto --dist loadfile $(PYTEST_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check src pipelines serving app bench tests scripts deploy docs/hooks notebooks
	$(VENV)/bin/ruff format --check src pipelines serving app bench tests scripts deploy docs/hooks notebooks

bench: install ## benchmarks (write bench/results/*.json)
	$(PY) bench/train_throughput.py
	$(PY) bench/bench_serving.py

docs: install ## build the documentation site into site/ (MkDocs, strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean: ## remove pipeline outputs (not the venv)
	rm -rf data/raw data/processed models reports site .run
