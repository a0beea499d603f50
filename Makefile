# recsys-augment: `make demo` runs the nightly DAG once on synthetic data; `make test` runs the suite.
# All local state lives under $(RECSYS_HOME) (default .recsys/). Every setting below can be overridden
# from the environment; see README, "Settings".

SHELL := /bin/bash
.DEFAULT_GOAL := help

export RECSYS_HOME ?= $(CURDIR)/.recsys
export RECSYS_LAKE ?= $(RECSYS_HOME)/lake
export AIRFLOW_HOME ?= $(RECSYS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export MLFLOW_TRACKING_URI ?= sqlite:///$(RECSYS_HOME)/mlflow/mlflow.db
export RECSYS_MLFLOW_ARTIFACTS ?= $(RECSYS_HOME)/mlflow/artifacts
export SPARK_MASTER ?= local[*]
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins$(if $(PYTHONPATH),:$(PYTHONPATH))
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
# the venv's console scripts (airflow, mlflow, uvicorn for `mlflow models serve`) come first on PATH
export PATH := $(CURDIR)/.venv/bin:$(PATH)

VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin
DEMO_DATE ?= 2026-01-31
PYTEST_ARGS ?=

.PHONY: help venv airflow-db demo ui test test-slow test-cluster run-on lint lock clean-state

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v java >/dev/null || { echo "Java 17 is required (Spark needs it): apt-get install openjdk-17-jre-headless"; exit 1; }
	@if command -v uv >/dev/null; then \
		uv venv -q --allow-existing --python 3.11 $(VENV) && VIRTUAL_ENV=$(VENV) uv pip install -q -r requirements.txt -r requirements-dev.txt; \
	else \
		python3.11 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt; \
	fi
	@touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned runtime and development requirements (uv when present, else pip)

# Pools of recsys_nightly: `gpu` (1 slot, the text encoder and the GAN) and `spark` (SPARK_POOL_SLOTS concurrent Spark jobs).
SPARK_POOL_SLOTS ?= 2
define POOLS_JSON
{"gpu": {"slots": 1, "description": "one GPU task at a time (embed, augment) on the accelerator", "include_deferred": false},
 "spark": {"slots": $(SPARK_POOL_SLOTS), "description": "concurrent Spark jobs (clean, catalogue, tables)", "include_deferred": false}}
endef
export POOLS_JSON

airflow-db: venv  ## set up the embedded Airflow metadata DB under $(AIRFLOW_HOME), with the gpu and spark pools
	@mkdir -p $(AIRFLOW_HOME) $(RECSYS_LAKE) $(RECSYS_MLFLOW_ARTIFACTS)
	@$(BIN)/airflow db migrate >$(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@echo "$$POOLS_JSON" >$(AIRFLOW_HOME)/pools.json
	@$(BIN)/airflow pools import $(AIRFLOW_HOME)/pools.json >>$(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

demo: airflow-db  ## generate synthetic data, run the nightly DAG once, print where everything is
	bin/recsys demo --date $(DEMO_DATE)

UI_PORT ?= 8080
ui: airflow-db  ## start the Airflow UI on 127.0.0.1:$(UI_PORT) (Browse -> Run reports); user admin, password printed below
	@echo "Airflow UI: http://127.0.0.1:$(UI_PORT)  user admin, password: $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated (made at the first start)"
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin $(BIN)/airflow api-server --host 127.0.0.1 --port $(UI_PORT)

# make run-on's values reach bin/recsys run-on verbatim, each as one single-quoted word --flag='value' (so a
# value may start with -): $(value) keeps make from expanding them in the recipe, unexport from expanding them
# into the environment, and a quote inside one is written '\''; so neither make nor the shell evaluates a
# backtick, $(...) or ; in a file name or mapping
RUN_ON_VARS := FORMAT SRC MAPPING SEP ENCODING ITEMS ITEM_MAPPING WINDOW_DAYS NAME REPLACE
unexport $(RUN_ON_VARS)
RUN_ON_USAGE := usage: make run-on FORMAT=<movielens-100k|movielens-1m|movielens-latest|csv> SRC=<file> \
	[MAPPING=user=..,item=..] [SEP=..] [ENCODING=..] [ITEMS=<file>] [ITEM_MAPPING=item=..,text=..+..] [WINDOW_DAYS=N] \
	[NAME=..] [REPLACE=1] (bin/recsys run-on --help)
run_on_arg = $(if $(value $2),$1='$(subst ','\'',$(value $2))')

run-on: airflow-db  ## import FORMAT= SRC= [MAPPING= SEP= ENCODING= ITEMS= ITEM_MAPPING= WINDOW_DAYS= NAME= REPLACE=1] and run the DAG for the last date in it
	$(if $(filter-out 0 1,$(value REPLACE)),$(error REPLACE= takes 1 or 0))$(if $(and $(value FORMAT),$(value SRC)),,$(error \
		$(RUN_ON_USAGE)))bin/recsys run-on $(call run_on_arg,--format,FORMAT) \
		$(call run_on_arg,--src,SRC) $(call run_on_arg,--mapping,MAPPING) $(call run_on_arg,--sep,SEP) \
		$(call run_on_arg,--encoding,ENCODING) $(call run_on_arg,--items,ITEMS) \
		$(call run_on_arg,--item-mapping,ITEM_MAPPING) $(call run_on_arg,--window-days,WINDOW_DAYS) \
		$(call run_on_arg,--name,NAME) $(if $(filter 1,$(value REPLACE)),--replace)

test: airflow-db  ## run the test suite but the slow and cluster tests, about 16 min (gpu tests only where a GPU is present)
	$(BIN)/pytest -m "not slow and not cluster" $(PYTEST_ARGS)

test-slow: airflow-db  ## run the slow tests: the backfill, run-on with odd ids, a front-door rerun, through Airflow (about 35 min)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

test-cluster: venv  ## run the loopback scale-out cluster test (PostgreSQL, Redis, MLflow server, Spark standalone, Celery)
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

lint:  ## ruff, including Airflow's AIR rules
	$(BIN)/ruff check .

lock:  ## recompile requirements.txt (runtime) and requirements-dev.txt (tests, lint, benchmarks) from their .in files
	uv pip compile requirements.in -o requirements.txt --python-version 3.11
	uv pip compile requirements-dev.in -o requirements-dev.txt --python-version 3.11

clean-state:  ## remove all local state under $(RECSYS_HOME)
	rm -rf $(RECSYS_HOME)
