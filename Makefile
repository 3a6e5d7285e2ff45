# Two entry points a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench install install-test clean system

# What the sandbox needs from Debian or Ubuntu: OpenSSH's server, git, Python's venv and pip,
# curl. As root (CI, a container) they are installed; otherwise the command that does it is shown.
DEBIAN_PACKAGES := openssh-server git python3-venv python3-pip curl
# What the machines sandbox adds (--sandbox=machines): installed as root, never required.
MACHINE_PACKAGES := debootstrap systemd-container

system:
	@missing=""; \
	for package in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then \
	        echo "installing$$missing"; \
	        DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	    else \
	        echo "poseidon's sandbox needs:$$missing. Install them first:" >&2; \
	        echo "    sudo apt-get install -y$$missing" >&2; \
	        exit 1; \
	    fi; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then \
	    for package in $(MACHINE_PACKAGES); do \
	        dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || \
	            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package >/dev/null || true; \
	    done; \
	fi

$(BIN)/python: | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

# The demo app's dependencies, fetched once so that the tests run offline (tests/README.md).
WHEELHOUSE := tests/.wheelhouse

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip download -q -d $(WHEELHOUSE) -r examples/apps/hello/requirements.txt

# On machines where this machine allows it (root, debootstrap, systemd-nspawn), else on the light
# sandbox, saying why; a sandbox kept from an earlier demo keeps its kind.
demo: system install
	@kind=; \
	if [ ! -d examples/.poseidon/sandbox/site ]; then \
	    why=$$($(BIN)/python -c 'from poseidon.sandbox import machines; print(machines.unavailable() or "")'); \
	    if [ -z "$$why" ]; then kind==machines; echo "make demo: on machines (Debian booted by systemd-nspawn)"; \
	    else echo "make demo: on the light sandbox ($$why)"; fi; \
	fi; \
	echo "$(BIN)/poseidon apply examples/site.yaml --sandbox$$kind"; \
	$(BIN)/poseidon apply examples/site.yaml --sandbox$$kind

# ruff (lint, then format) and mypy first: seconds, where the tests take minutes.
test: system install-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
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
