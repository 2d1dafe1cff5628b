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

# The images, one per member with a Dockerfile, named <IMAGE_REPOSITORY>/<member>:<IMAGE_TAG>
# (`make image-names` prints them for other tools); the tag defaults to the project's version.
IMAGES := api training finetune
IMAGE_REPOSITORY ?= iris-mlops
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE_TAG ?= $(VERSION)
# The kind cluster of k8s/kind-config.yaml
KIND_CLUSTER := iris-mlops
# skaffold labels every Deployment's and StatefulSet's pod template with skaffold.dev/run-id, a
# new UUID each time it runs unless one is given (its --label wins, and its own selectors read
# that label): a fixed one, so a redeploy with nothing changed restarts nothing.
SKAFFOLD_FLAGS := --kube-context kind-$(KIND_CLUSTER) --label skaffold.dev/run-id=$(KIND_CLUSTER)
# The base of every image (a build argument); without a registry: `make base-image`, then
# PYTHON_IMAGE=$(LOCAL_BASE_IMAGE).
PYTHON_IMAGE ?= python:3.12-slim
LOCAL_BASE_IMAGE := iris-base:bookworm
# A client that builds with BuildKit: docker with the buildx plugin, else Debian's docker.io
# client (20.10, BuildKit built in).
DOCKER ?= $(shell docker buildx version >/dev/null 2>&1 && echo docker || \
  { test -x /usr/bin/docker && echo /usr/bin/docker || echo docker; })

.PHONY: help sync up down status test test-fast test-tools lint screenshots bench bench-serving bench-feedback bench-tools \
	images image-names base-image test-images image-tools \
	k8s-tools kind-up kind-down k8s-preflight k8s-dev k8s-run k8s-e2e
help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

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

test: sync test-tools k8s-tools  ## the whole test suite, with real MLflow, Prefect and API servers (what CI runs)
	$(RUN) pytest -m "not images"

test-fast: sync  ## the unit tier: no servers, no processes of ours, no tools to install (under 30 s)
	$(RUN) pytest -m unit

lint: sync  ## uv.lock up to date, ruff, formatting and mypy (strict)
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

# Asked to build on the local stand-in base, make it first when it is missing.
images: $(if $(filter $(LOCAL_BASE_IMAGE),$(PYTHON_IMAGE)),base-image)
images:  ## build the three images (PYTHON_IMAGE=... for another base)
	@set -e; for m in $(IMAGES); do \
	  echo "== $(IMAGE_REPOSITORY)/$$m:$(IMAGE_TAG)"; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -f $$m/Dockerfile -t $(IMAGE_REPOSITORY)/$$m:$(IMAGE_TAG) \
	    --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) --build-arg VERSION=$(VERSION) \
	    --build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	    --build-arg SOURCE="$$(git remote get-url origin 2>/dev/null | sed -E 's#://[^/@]*@#://#')" .; \
	done
	@# the images these tags named before: nothing refers to them any more
	@$(DOCKER) image prune -f --filter label=org.opencontainers.image.vendor=iris-mlops >/dev/null

image-names:  ## the images' names, one `member name` per line
	@for m in $(IMAGES); do echo "$$m $(IMAGE_REPOSITORY)/$$m:$(IMAGE_TAG)"; done

base-image:  ## without a registry: a local stand-in base (Debian + Python, debootstrap), if missing
	@$(DOCKER) image inspect $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 || \
	  DOCKER=$(DOCKER) scripts/local-base-image.sh $(LOCAL_BASE_IMAGE)

test-images: sync image-tools k8s-tools images  ## build the images, run the manifests' containers against real services (hardened)
	DOCKER=$(DOCKER) $(RUN) pytest -m images

k8s-tools:  # pinned helm 4, kubernetes-validate and checkov into .tools/ (the offline Kubernetes checks)
	@scripts/k8s-tools.sh

kind-up:  ## Kubernetes: create the kind cluster (k8s/kind-config.yaml), if missing; needs kind and docker
	@kind get clusters 2>/dev/null | grep -qx $(KIND_CLUSTER) || kind create cluster --config k8s/kind-config.yaml
	kubectl config use-context kind-$(KIND_CLUSTER)

k8s-preflight:  ## Kubernetes: tools new enough, every pinned image published (scripts/k8s-preflight.sh)
	@scripts/k8s-preflight.sh

k8s-dev: k8s-preflight kind-up  ## Kubernetes: skaffold dev (build, load into kind, deploy all, port-forward, watch)
	skaffold dev $(SKAFFOLD_FLAGS) --port-forward

k8s-run: k8s-preflight kind-up  ## Kubernetes: skaffold run (build and deploy once, no watching)
	skaffold run $(SKAFFOLD_FLAGS)

k8s-e2e:  ## Kubernetes: the end-to-end check against the running cluster (scripts/k8s-e2e.sh)
	scripts/k8s-e2e.sh kind-$(KIND_CLUSTER)

kind-down:  ## Kubernetes: delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

bench: sync bench-tools  ## benchmarks (training, serving, feedback): print numbers, no pass/fail
	$(RUN) python -m bench

bench-serving: sync bench-tools  ## the serving benchmark alone (this API vs mlflow models serve)
	$(RUN) python -m bench serving

bench-feedback: sync  ## the feedback benchmark alone (5th /suggest -> new version served)
	$(RUN) python -m bench feedback

test-tools:  # from Debian's packages: Prometheus and promtool (monitoring tests), PostgreSQL (store tests), npm (helm for the Kubernetes checks)
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
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

image-tools: test-tools  # a Docker engine that answers (and PostgreSQL, the feedback database)
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make test-images needs a running Docker engine" \
	  "(Debian: apt-get install docker.io, then start dockerd); .ci/run starts one"; exit 1; }
