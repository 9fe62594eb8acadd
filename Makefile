# exectrack: the commands a developer types. Everything is reproducible from a
# fresh clone: `make test` and `make run` set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  := bash deploy/local/stack.sh

.DEFAULT_GOAL := help
.PHONY: help venv lock lock-upgrade up down status logs migrate run test test-all faults lint fmt bench bench-peer clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

# The environment comes from one lock, requirements.lock (runtime + dev, with
# hashes): exactly those versions, whatever the registry serves today. exectrack
# itself is installed editable without build isolation (the build backend is
# pinned in the lock too). deploy/requirements.lock, the image's runtime subset,
# is derived from it by the same `make lock`. docs/development.md#the-lock
$(BIN)/.installed: pyproject.toml requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

venv: $(BIN)/.installed  ## create .venv from requirements.lock (exectrack + its dev tools)

# uv (pinned) resolves the lock; it is not needed to install from it.
UV_VERSION := 0.13.9
UV := .local/tools/bin/uv
COMPILE := $(UV) pip compile pyproject.toml --quiet --universal --python-version 3.11 --generate-hashes
$(UV):
	$(PYTHON) -m venv .local/tools
	.local/tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

lock: $(UV)  ## re-resolve the locks after editing pyproject.toml (keeps every pin it can)
	$(COMPILE) --extra dev -o requirements.lock
	$(COMPILE) --extra consumer --constraint requirements.lock -o deploy/requirements.lock

lock-upgrade: $(UV)  ## move every pin to the newest version pyproject.toml allows
	$(COMPILE) --extra dev --upgrade -o requirements.lock
	$(MAKE) lock

up:  ## start the local Kafka broker and MariaDB (deploy/local)
	$(STACK) up

down:  ## stop them
	$(STACK) down

status:  ## are they running?
	$(STACK) status

logs:  ## tail their logs
	$(STACK) logs

# the stack's settings (its ports may be moved: EXECTRACK_LOCAL_*_PORT), as run.sh reads them
migrate: venv up  ## create/upgrade the schema in the local database
	eval "$$($(STACK) env)" && $(BIN)/exectrack-consumer migrate

run: venv up migrate  ## the main job: consumer fed by the simulator (see README)
	bash deploy/local/run.sh

test: venv  ## the default suite: unit + integration on the real broker and database
	$(BIN)/pytest -m "not slow"

test-all: venv  ## everything, including the slow suites
	$(BIN)/pytest

faults: venv  ## the fault scenarios at full scale (long): docs/reliability.md
	EXECTRACK_FAULTS_SCALE=long $(BIN)/pytest tests/faults -v --timeout 900

lint: venv  ## ruff + mypy, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv  ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv up migrate  ## the full benchmark (long): bench/README.md
	$(BIN)/python -m bench --profile full

bench-peer: venv up  ## exectrack beside Kafka Connect + the Debezium JDBC sink (long; java, mvn)
	$(BIN)/python -m bench.peer

clean:  ## remove the venv and the local stack's data (keeps the Kafka jar cache)
	$(STACK) reset
	rm -rf $(VENV)
