# Two entry points a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'

demo: install
	$(BIN)/poseidon apply examples/site.yaml --sandbox

test: install-test
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build dist
