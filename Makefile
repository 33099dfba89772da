# Tagih — every target creates what it needs; safe to re-run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first interpreter on PATH that actually runs and is >= 3.11 (pyenv shims may exist but fail).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
VENV_SAM := .venv-sam
# checkov pins its own boto3 and friends: a venv of its own keeps them out of the project's.
VENV_CHECKOV := .venv-checkov
BIN := $(VENV)/bin
ENV ?= dev
PORT ?= 3000
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

include layers/common/bytecode.mk  # PYTHON313: the interpreter sam build compiles with

.PHONY: help venv lint format unit integration e2e test local build validate checkov bench deploy openapi clean

help:
	@echo "make local     serve the whole API on 127.0.0.1:$(PORT) (moto, localstripe, Midtrans fake)"
	@echo "make test      lint, unit, integration and end-to-end tests, template checks"
	@echo "make lint      ruff, mypy, cfn-lint"
	@echo "make build     sam build (layer wheels for python3.13 arm64)"
	@echo "make validate  sam validate --lint"
	@echo "make checkov   checkov on template.yaml: 0 failed checks, every skip justified in the template"
	@echo "make bench     cold-start import ratios and other numbers"
	@echo "make openapi   regenerate docs/openapi.json, docs/events.md and docs/events/*.schema.json"
	@echo "make deploy    sam build && sam deploy --config-env \$$ENV (default dev)"

$(VENV)/.installed: requirements/dev.lock
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements/dev.lock
	touch $@

$(VENV_SAM)/.installed: requirements/sam.lock
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/python -m pip install -q -r requirements/sam.lock
	touch $@

$(VENV_CHECKOV)/.installed: requirements/checkov.lock
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/python -m pip install -q -r requirements/checkov.lock
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/common/python/tagih functions local tools tests
	$(BIN)/cfn-lint template.yaml

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: venv
	$(PYTEST) tests/unit -q

integration: venv
	$(PYTEST) tests/integration -q -n 2

e2e: venv
	$(PYTEST) tests/e2e -q

test: lint unit integration e2e validate checkov build
	@echo "make test: all green"

local: venv
	PORT=$(PORT) $(BIN)/python -m local $(if $(PARAMS),--parameter-overrides $(PARAMS))

validate: $(VENV_SAM)/.installed
	$(VENV_SAM)/bin/sam validate --lint --template template.yaml

# --skip-download: offline, no platform calls. Fails on any failed check; a skip lives in the
# resource's Metadata with its reason (README "Checkov").
checkov: $(VENV_CHECKOV)/.installed
	$(VENV_CHECKOV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

# The layer and every function are compiled for CPython 3.13 (layers/common/bytecode.mk finds it;
# PYTHON313=/path/to/python3.13 picks one); tests/build checks every module ships its bytecode.
build: $(VENV_SAM)/.installed venv
	PATH="$(abspath $(VENV_SAM))/bin:$$PATH" $(VENV_SAM)/bin/sam build --template template.yaml
	@ls .aws-sam/build/CommonLayer/python/pydantic_core/ | grep -E 'aarch64-linux-gnu\.so$$'
	$(PYTEST) tests/build -q

# Cold imports from source and from the built artifact under the Lambda runtime's CPython 3.13
# (found as the build finds it), the renewal sweep's reads, AWS calls per route and the cost model.
bench: venv build
	PYTHON313="$(PYTHON313)" $(BIN)/python -m tools.bench
	$(BIN)/python -m tools.bench_renewals
	$(BIN)/python -m tools.bench_cost

openapi: venv
	$(BIN)/python -m tools.openapi --write
	$(BIN)/python -m tools.events_catalog --write

deploy: build
	$(VENV_SAM)/bin/sam deploy --config-env $(ENV)

clean:
	rm -rf $(VENV) $(VENV_SAM) $(VENV_CHECKOV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
