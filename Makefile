# Two commands do all the set-up on a fresh machine (see README.md):
#   make local   - the main job: local mode, end to end on the bundled sample
#   make test    - ruff + the whole test suite (what CI runs)
SHELL := /bin/bash
# The CPU torch wheel on this platform is built for CPython 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: local test lint setup benchmarks clean

setup: $(STAMP)

$(STAMP): requirements/dev.txt training/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

local: $(STAMP)
	$(PY) -m localmode run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache
