# The README's two commands are `make demo` and `make test`; each sets up what it needs,
# idempotently, on a fresh Debian 12 / Raspberry Pi OS machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 20
PYTEST_ARGS ?=

.PHONY: setup system-deps venv demo test lint bench lock clean

setup: system-deps venv

# mosquitto comes from Debian's packages; only installed when missing.
system-deps:
	@./scripts/install-system-deps.sh

$(STAMP): requirements-dev.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: setup
	DEMO_SECONDS=$(DEMO_SECONDS) $(PY) -m emulator.demo

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check agent drivers provisioning emulator cloud fleet iotmqtt tests bench
	$(VENV)/bin/mypy agent drivers provisioning emulator cloud fleet iotmqtt
	$(PY) -m cloud.template_sync --check
	$(VENV)/bin/cfn-lint cloud/template.yaml

bench: setup
	$(PY) -m bench.run_all

# Regenerate the hash-pinned lock files after changing dependencies in pyproject.toml.
lock: venv
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --extra dev --strip-extras -o requirements-dev.lock pyproject.toml
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
