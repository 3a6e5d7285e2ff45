# Two entry points a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

# The demo app's dependencies, fetched once so that the tests run offline (tests/README.md).
WHEELHOUSE := tests/.wheelhouse

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip download -q -d $(WHEELHOUSE) -r examples/apps/hello/requirements.txt

demo: install
	$(BIN)/poseidon apply examples/site.yaml --sandbox

test: install-test
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

# poseidon against Ansible and pyinfra (bench/README.md); BENCH_ARGS=--quick for a short run.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/bin/pyinfra: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -r bench/requirements.txt
	touch $@

bench: install $(BENCH_VENV)/bin/pyinfra
	$(BIN)/python bench/run.py --peers $(BENCH_VENV)/bin $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache build dist
