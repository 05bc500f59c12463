# The project's commands. Each target creates or reuses .venv and installs the pinned
# dependencies first, so every command works on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

DAYS ?= 3
ROWS ?= 200000
PYTEST_ARGS ?=
# Azurite (Azure Blob emulator) for the ADLS tests: npm installs it into .ci/node unless
# AZURITE_BLOB names another azurite-blob binary.
AZURITE_VERSION := 3.35.0
AZURITE_BLOB ?= $(CURDIR)/.ci/node/node_modules/.bin/azurite-blob

.PHONY: venv demo test services azurite chromium dev lint clean bench api mlflow

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

## Generate DAYS x ROWS of features, train + register the demo model, score and catalog them.
demo: venv
	$(VENV)/bin/batch-inference demo --days $(DAYS) --rows $(ROWS)

## The test suite (what CI runs), after installing and starting the servers it needs.
test: venv services azurite chromium
	AZURITE_BLOB=$(AZURITE_BLOB) $(VENV)/bin/pytest $(PYTEST_ARGS)

## PostgreSQL and Redis on loopback: installed (apt-get, as root) and started where missing.
services: venv
	PYTHON=$(PY) bash .ci/services

azurite:
ifeq ($(origin AZURITE_BLOB),file)
	bash .ci/azurite $(AZURITE_VERSION)
endif

## Headless Chromium + chromedriver from Debian's packages for the browser test (apt-get, as root).
chromium:
	bash .ci/chromium

## The Dagster UI on the demo's instance (http://127.0.0.1:3000).
dev: venv
	DAGSTER_HOME=$$($(PY) -c "from batch_inference_platform.cli import prepare_dagster_home as p; \
	from batch_inference_platform.config import load_settings as l; s = l(); p(s); print(s.dagster_home)") \
	$(VENV)/bin/dagster dev -w workspace.yaml

## The HTTP service: webhook receivers (secrets from MLFLOW_WEBHOOK_SECRET and
## DATABRICKS_WEBHOOK_SECRET in the environment).
api: venv
	$(VENV)/bin/batch-inference api

## A local MLflow server on the demo's registry (application.yml's mlflow.tracking-uri sqlite
## file and artifact root) that delivers webhooks to loopback receivers (README "Run the loop
## locally"). e.g. make mlflow MLFLOW_PORT=5001
MLFLOW_PORT ?= 5000
mlflow: venv
	@read -r db artifacts < <($(PY) -c "import yaml; m = yaml.safe_load(open('application.yml'))\
	['batch-inference']['mlflow']; print(m['tracking-uri'], m['artifact-root'])"); \
	mkdir -p "$$artifacts" "$$(dirname "$${db#sqlite:///}")"; \
	echo "mlflow server on $$db (artifacts $$artifacts): http://127.0.0.1:$(MLFLOW_PORT)"; \
	MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true \
	MLFLOW_WEBHOOK_CACHE_TTL=1 exec $(VENV)/bin/mlflow server --backend-store-uri "$$db" \
	--default-artifact-root "$$artifacts" --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

clean:
	rm -rf data

## Side-by-side scoring benchmark (raw, naive, spark_udf, engine, dagster; launched = one
## partition's whole score job launched over GraphQL on dagster dev); figures in
## benchmarks/results/latest.json. e.g. make bench WAYS=engine,dagster,launched MODELS=lgbm
bench: ROWS = 1000000
WAYS ?= raw,naive,spark_udf,engine,dagster
MODELS ?= lgbm,hgb,skpipe
bench: venv
	$(PY) -m benchmarks.run --rows $(ROWS) --ways $(WAYS) --models $(MODELS)
