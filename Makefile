# Two commands do all the set-up on a fresh machine (see README.md):
#   make local   - the main job: local mode, end to end on the bundled sample
#   make test    - ruff + the whole test suite (what CI runs)
#   make test-unit - the fast unit tier only (pure modules, no moto, no torch; pyproject unit_tier)
#   make test-integration - everything but the unit tier (moto worlds, training, serving, browsers)
#   make settings - after a change to mlpipeline.settings.Settings: rewrite the ASL defaults and template substitutions
SHELL := /bin/bash
# The CPU torch wheel on this platform is built for CPython 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP := $(VENV)/.installed-dev
# AWS tooling for the pipeline tests (tests/pipeline): the SAM CLI pins its own boto3/cfn-lint, so it
# gets its own venv on Python 3.12 (the Lambdas' runtime; `sam build` needs that interpreter), and
# asl-validator (npm, pinned in package-lock.json) checks the state machine definition.
SAM_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
NPM_STAMP := node_modules/.installed
# checkov pins an old boto3 (1.35) that would downgrade the project's botocore service models: it gets its
# own venv, pinned to a current release (a loose range once resolved to 3.1.47, which misses current checks).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
# The browser tests (tests/web, tests/inference_lambda) drive Debian's chromium through Playwright for
# Python (requirements/dev.txt): Playwright's own browser download needs the internet. apt-get runs only
# when the browser is missing.
CHROMIUM := /usr/bin/chromium
CHROMIUM_STAMP := $(VENV)/.installed-chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: local stop settings test test-unit test-integration lint setup benchmarks clean aws-tools browser image-uris

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

test: $(DEV_STAMP) $(SAM_STAMP) $(NPM_STAMP) $(CHECKOV_STAMP) $(CHROMIUM_STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

# After a change to mlpipeline.settings.Settings: the ASL's ApplyDefaults and the template's substitutions.
settings: $(LOCAL_STAMP)
	$(PY) statemachine/write_settings.py

test-unit: $(DEV_STAMP)
	$(PY) -m pytest --unit-tier $(PYTEST_ARGS)

test-integration: $(DEV_STAMP) $(SAM_STAMP) $(NPM_STAMP) $(CHECKOV_STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest --no-unit-tier $(PYTEST_ARGS)

$(CHROMIUM_STAMP): | $(VENV)/bin/python
	test -x $(CHROMIUM) || { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --version
	touch $@

$(SAM_STAMP):
	test -n "$(SAM_PYTHON)" || { echo "python3.12 is needed for the SAM CLI and sam build" >&2; exit 1; }
	$(SAM_PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check aws-sam-cli==1.170.0
	touch $@

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

aws-tools: $(SAM_STAMP) $(NPM_STAMP) $(CHECKOV_STAMP)

browser: $(CHROMIUM_STAMP)

# Regenerate functions/pipeline_layer/mlpipeline/image_uris.json with the sagemaker SDK (by hand, when
# AWS publishes new PyTorch containers; the SDK is far too big for a Lambda, see generate_image_uris.py).
image-uris:
	rm -rf .venv-sagemaker && $(SAM_PYTHON) -m venv .venv-sagemaker
	.venv-sagemaker/bin/python -m pip install -q --disable-pip-version-check "sagemaker>=3.27,<4"
	.venv-sagemaker/bin/python functions/pipeline_layer/generate_image_uris.py

clean:
	rm -rf $(VENV) $(SAM_VENV) node_modules .aws-sam .pytest_cache .ruff_cache
