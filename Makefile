# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

## Install, then start the whole local stack (Temporal + UI, sandboxes, worker, API); Ctrl-C stops it.
run: install
	$(BIN)/ckey up

## Install, then run every check and test.
test: install lint typecheck pytest

lint:
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy .

pytest:
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench.operations
	$(BIN)/python -m bench.api_body_limits

clean:
	rm -rf $(VENV) .ckey .mypy_cache .ruff_cache .pytest_cache
