# The two commands of the README: `make up` (control plane + demo app) and `make test`.
# Both create .venv and install shoal with what it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up down status test lint bench setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

up: setup
	$(BIN)/shoal up

down: setup
	$(BIN)/shoal down

status: setup
	$(BIN)/shoal status

test: setup
	scripts/system-deps.sh chromium prometheus redis-server etcd-server nghttp2-client iproute2 iptables
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup
	scripts/system-deps.sh nginx-light nghttp2-client wrk
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
