"""The ways of running a body on N ranks that the benchmarks compare, each a `Case` factory."""

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import ray
import raympi
from raympi.flavours import FLAVOURS

from benchmarks import bodies
from benchmarks.harness import Case

RUN_TIMEOUT_S = 600
CORES = os.cpu_count() or 1

LABELS = {
    "mpirun": "(a) plain mpirun",
    "mpirun_btl": "(a') plain mpirun, --mca btl ^ofi",
    "ray": "(b) mpi runtime env, Ray running",
    "raympijob": "(c) RayMPIJob task, Ray running",
    "raympijob_cold": "(c') RayMPIJob task, warm worlds off",
    "cold": "(d) python wf.py, RayMPIJob, cold",
    "kfmpi": "(e) python wf.py, kfmpi MPIJob (1 process)",
    "ray_cold": "Ray cold start + 1 task",
    "flytekit": "python wf.py, plain task (no MPI)",
}


def _oversubscribe(ranks: int, flavour: str = "openmpi") -> list:
    return FLAVOURS[flavour].oversubscribe if ranks > CORES else []


def _process(*command: str):
    def run():
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")

    return run


@contextmanager
def _env_var(name: str, value: str):
    """`name` set to `value` in this process's environment meanwhile; only it is restored (Ray sets others)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def mpirun(ranks: int, body: str, flavour: str = "openmpi", python: str = sys.executable, args=(),
           method: str = "") -> Case:
    """Plain `mpirun` (or the flavour's own launcher, its ranks running `python`), with `args` before `-n`."""
    mpi = FLAVOURS[flavour]
    run = _process(mpi.find(python), *mpi.as_root(), *_oversubscribe(ranks, flavour), *args, "-n", str(ranks),
                   python, "-m", "benchmarks.bodies", body)
    return Case(method or ("mpirun" if flavour == "openmpi" else f"mpiexec:{flavour}"), ranks, body, run)


def mpirun_btl(ranks: int, body: str) -> Case:
    """Plain `mpirun` without the libfabric BTL, as RayMPIJob's Open MPI ranks run (raympi.flavours.OpenMPI.env)."""
    return mpirun(ranks, body, args=("--mca", "btl", "^ofi"), method="mpirun_btl")


@ray.remote(max_retries=0)
def _rank0(body: str):
    raympi.mpi_init()
    return getattr(bodies, body)()


def ray_runtime_env(ranks: int, body: str) -> Case:
    mpi = {"args": [*_oversubscribe(ranks), "-n", str(ranks)], "worker_entry": f"benchmarks.bodies.{body}"}
    remote = _rank0.options(runtime_env={"mpi": mpi})
    return Case("ray", ranks, body, lambda: ray.get(remote.remote(body), timeout=RUN_TIMEOUT_S))


def raympijob(ranks: int, body: str) -> Case:
    from benchmarks.tasks import flyte_task

    return Case("raympijob", ranks, body, flyte_task("raympijob", ranks, body))


def raympijob_cold(ranks: int, body: str) -> Case:
    """RayMPIJob with warm worlds off (RAYMPI_WARM_WORLDS=0): every call starts a world of its own."""
    from benchmarks.tasks import flyte_task

    call = flyte_task("raympijob", ranks, body)

    def run():
        with _env_var("RAYMPI_WARM_WORLDS", "0"):
            return call()

    return Case("raympijob_cold", ranks, body, run)


def cold_workflow(kind: str, ranks: int) -> Case:
    method = {"raympijob": "cold", "kfmpi": "kfmpi", "plain": "flytekit"}[kind]
    run = _process(sys.executable, "-m", "benchmarks.workflow", kind, str(ranks))
    return Case(method, ranks, "launch", _own_shared_memory(run) if kind == "kfmpi" else run)


def _own_shared_memory(run):
    """`run` with a shared memory directory of its own, removed after it: kfmpi's MPIJob runs locally as one process,
    whose MPI_Init (a singleton's) leaves its 16 MiB segment behind even after MPI_Finalize (Open MPI 5.0.11:
    `python -c "from mpi4py import MPI; MPI.COMM_WORLD.allreduce(1)"` leaves one in /dev/shm)."""
    def in_own():
        with tempfile.TemporaryDirectory(dir="/dev/shm") as own, _env_var("OMPI_MCA_btl_sm_backing_directory", own):
            run()

    return in_own


def ray_cold(ranks: int) -> Case:
    """As RayMPIJob's embedded Ray would be started for `ranks`."""
    return Case("ray_cold", ranks, "-", _process(sys.executable, "-m", "benchmarks.ray_cold", str(max(CORES, ranks))))
