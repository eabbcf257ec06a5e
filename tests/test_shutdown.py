"""No MPI process outlives the Ray that started it, idle prestarted worlds included."""

import subprocess
import sys
import textwrap

from conftest import TESTS_DIR, wait_until_gone

DRIVER = textwrap.dedent(
    """
    import ray, raympi
    raympi.init_ray(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": %r}})

    @ray.remote(runtime_env={"mpi": {"args": ["--oversubscribe", "-n", "3"], "worker_entry": "mpi_entries.pi_worker"}})
    def calc(samples):
        raympi.mpi_init()
        from mpi4py import MPI
        import mpi_entries
        MPI.COMM_WORLD.bcast(samples, root=0)
        return mpi_entries.count_inside(samples)

    for _ in range(3):
        ray.get(calc.remote(1000))
    ray.shutdown()
    """
)


def world_pids() -> set:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in ps.splitlines() if "raympi.runner" in line}


def test_no_rank_or_mpirun_survives_ray_shutdown():
    before = world_pids()
    subprocess.run([sys.executable, "-c", DRIVER % str(TESTS_DIR)], check=True, timeout=300,
                   capture_output=True)
    assert wait_until_gone(world_pids() - before, within=20) == set()
