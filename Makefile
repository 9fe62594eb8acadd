# exectrack: the commands a developer types. Everything is reproducible from a
# fresh clone: `make test` and `make run` set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  := bash deploy/local/stack.sh

.DEFAULT_GOAL := help
.PHONY: help venv up down status logs migrate run test test-all faults lint fmt bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed  ## create .venv and install exectrack with its dev tools

up:  ## start the local Kafka broker and MariaDB (deploy/local)
	$(STACK) up

down:  ## stop them
	$(STACK) down

status:  ## are they running?
	$(STACK) status

logs:  ## tail their logs
	$(STACK) logs

migrate: venv up  ## create/upgrade the schema in the local database
	$(BIN)/exectrack-consumer migrate

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

clean:  ## remove the venv and the local stack's data (keeps the Kafka jar cache)
	$(STACK) reset
	rm -rf $(VENV)
