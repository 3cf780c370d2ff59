# kraken-p2p: `make run` starts a dev cluster, `make test` runs the test suite.
# Both install what they need first: Debian packages (as root, or through sudo) and a venv.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages and a binary each provides; a package is installed unless both are there
# (a dynamic busybox also provides /bin/busybox, but test images need busybox-static's).
SYSTEM_PACKAGES := redis-server:redis-server aria2:aria2c iproute2:tc \
  docker.io:dockerd skopeo:skopeo docker-registry:docker-registry busybox-static:/bin/busybox \
  nginx-light:nginx
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help system-deps venv deps run test test-unit test-integration bench-swarm bench-bare bench-latency bench-registry bench-tracker lint clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

system-deps: ## Install the Debian packages the cluster, tests and benchmarks use (redis-server, aria2, iproute2, docker.io, skopeo, docker-registry, busybox-static, nginx-light)
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair#*:}" >/dev/null && dpkg -s "$${pair%%:*}" >/dev/null 2>&1 \
	    || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed ## Create the virtualenv with pinned Python packages

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

deps: system-deps venv

run: deps ## Run a dev cluster in the foreground (writes .devcluster/cluster.json; Ctrl-C stops it)
	$(VENV)/bin/krakenctl devcluster --workdir .devcluster $(ARGS)

test: deps ## Run every test (unit and integration, real processes) in a private network namespace
	tests/isolated.sh $(VENV)/bin/pytest -q

test-unit: deps ## Run the unit tests only
	$(VENV)/bin/pytest -q tests/unit

test-integration: deps ## Run the integration tests only
	$(VENV)/bin/pytest -q tests/integration

bench-swarm: deps ## Swarm benchmark: 1 origin, N agents at a per-host cap (BENCH_ARGS="--agents 20 --rate 8 --size 256")
	$(VENV)/bin/python -m tests.bench.swarm $(BENCH_ARGS)

bench-tracker: deps ## Tracker CPU per announce by swarm size, against GET /health (BENCH_ARGS="--sizes 4,200,1000,5000,20000")
	$(VENV)/bin/python -m tests.bench.tracker $(BENCH_ARGS)

bench-registry: deps ## docker push/cold pull of a ~200 MiB image: proxy and agent vs docker-registry (BENCH_ARGS="--size 200")
	tests/isolated.sh $(VENV)/bin/python -m tests.bench.registry $(BENCH_ARGS)

bench-bare: deps ## Stock libtorrent swarm with kraken's settings, no kraken code on the path (BENCH_ARGS="--agents 20 --size 256 --seeder-queue 8")
	$(VENV)/bin/python -m tests.bench.bare $(BENCH_ARGS)

bench-latency: deps ## Cold 1 MiB blob through an agent vs a direct origin GET, and time to first byte (BENCH_ARGS="--link netns")
	$(VENV)/bin/python -m tests.bench.latency $(BENCH_ARGS)

lint: deps ## ruff check (rules in pyproject.toml)
	$(VENV)/bin/pip install -q ruff==0.17.6 && $(VENV)/bin/ruff check .

clean: ## Remove the venv and dev-cluster state
	rm -rf $(VENV) .devcluster bench-results
