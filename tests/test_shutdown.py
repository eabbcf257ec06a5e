"""No process outlives the Ray that started it: finished, failed, idle prestarted and actor worlds."""

import os
import subprocess
import sys
import textwrap
import uuid

from conftest import TESTS_DIR, command_line, marked_processes, wait_until_gone

DRIVER = textwrap.dedent(
    """
    import ray, raympi
    raympi.init_ray(address="local", num_cpus=2, include_dashboard=False,
                    runtime_env={"env_vars": {"PYTHONPATH": %r}})
    MPI_ENV = {"mpi": {"args": ["--oversubscribe", "-n", "3"], "worker_entry": "mpi_entries.actor_worker"}}

    @ray.remote(runtime_env=MPI_ENV)
    def calc(n):
        raympi.mpi_init()
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        comm.bcast(n, root=0)
        total = comm.reduce(0, root=0)
        comm.bcast(None, root=0)
        return total

    @ray.remote(runtime_env=MPI_ENV)
    class Idle:
        def __init__(self):
            raympi.mpi_init()

    for n in range(1, 4):
        assert ray.get(calc.remote(n)) == 3 * n
    actor = Idle.remote()
    ray.get(actor.__ray_ready__.remote())
    ray.shutdown()  # with the actor's world still up, and maybe idle prestarted worlds
    """
)


def test_nothing_survives_ray_shutdown():
    marker = f"RAYMPI_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    subprocess.run([sys.executable, "-c", DRIVER % str(TESTS_DIR)], check=True, timeout=300,
                   capture_output=True, env={**os.environ, name: value})
    left = wait_until_gone(marked_processes(marker), within=30)
    assert left == set(), [command_line(p)[:200] for p in left]
