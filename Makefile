# Two commands do all the set-up on a fresh machine (see README.md):
#   make local   - the main job: local mode, end to end on the bundled sample
#   make test    - ruff + the whole test suite (what CI runs)
SHELL := /bin/bash
# The CPU torch wheel on this platform is built for CPython 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: local stop test lint setup benchmarks clean

setup: $(DEV_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Local mode needs only the run-time packages; the tests add the tooling on top.
$(LOCAL_STAMP): requirements/local.txt training/requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) -r requirements/local.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): requirements/dev.txt $(LOCAL_STAMP)
	$(PIP) -r requirements/dev.txt
	touch $@

local: $(LOCAL_STAMP)
	$(PY) -m localmode run $(ARGS)

# Stop the endpoint `make local` leaves answering on 127.0.0.1:8080.
stop: $(LOCAL_STAMP)
	$(PY) -m localmode stop

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

test: $(DEV_STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache
