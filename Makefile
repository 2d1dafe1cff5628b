# iris-mlops developer entry points. Every target installs what it needs (uv included).
SHELL := bash
.DEFAULT_GOAL := help

UV := ./scripts/uv.sh
# compiled bytecode: imports of sklearn/mlflow fall from 4-9 s to about 2 s
export UV_COMPILE_BYTECODE := 1
# use the machine's Python >= 3.11
export UV_PYTHON_DOWNLOADS := never
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
# no usage reports from MLflow (and no outbound attempts on machines without internet)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
RUN := $(UV) run --frozen

.PHONY: help sync up down status test test-fast test-tools lint screenshots bench bench-serving bench-feedback bench-tools
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

sync:  ## install the locked environment into .venv
	$(UV) sync --frozen

up: sync  ## main job: MLflow, Prefect + worker, the DVC pipeline, the API on 127.0.0.1; print addresses
	$(RUN) iris-stack up

down:  ## stop the services `make up` started
	$(RUN) iris-stack down

status:  ## which local services answer
	$(RUN) iris-stack status

screenshots: sync  ## with the stack up: a little traffic, then Chromium screenshots into docs/
	$(RUN) iris-screenshots

test: sync test-tools  ## the whole test suite, with real MLflow, Prefect and API servers (what CI runs)
	$(RUN) pytest

test-fast: sync test-tools  ## the unit tier: no servers, no processes of ours (under 30 s)
	$(RUN) pytest -m unit

lint: sync  ## uv.lock up to date, ruff, formatting and mypy (strict)
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

bench: sync bench-tools  ## benchmarks (training, serving, feedback): print numbers, no pass/fail
	$(RUN) python -m bench

bench-serving: sync bench-tools  ## the serving benchmark alone (this API vs mlflow models serve)
	$(RUN) python -m bench serving

bench-feedback: sync  ## the feedback benchmark alone (5th /suggest -> new version served)
	$(RUN) python -m bench feedback

test-tools:  # from Debian's packages: Prometheus and promtool (monitoring tests), PostgreSQL (store tests)
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq $$missing >/dev/null || (apt-get update -qq && apt-get install -y -qq $$missing); \
	  else echo "the tests need:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi

bench-tools:  # load generators from Debian's packages
	@command -v wrk >/dev/null && command -v hey >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq wrk hey >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk hey); \
	  else echo "the serving benchmark needs wrk and hey: sudo apt-get install wrk hey"; exit 1; fi
