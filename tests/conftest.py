import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from scripts.netns_cluster import start as start_netns_cluster

TESTS_DIR = Path(__file__).resolve().parent
# Peers' lines differ only in numbers; Ray's log dedup would fold them together.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_finish(session):
    """This process runs no rank: a test module that imports mpi4py.MPI would make it a singleton MPI world, and Open
    MPI leaves such a world's shared memory in /dev/shm (sm_segment.*) once it exits. Ranks import it themselves."""
    if "mpi4py.MPI" in sys.modules:
        raise pytest.UsageError("a test module imported mpi4py.MPI into pytest's process (a module it imports does "
                                "`from mpi4py import MPI`): import it inside what the ranks run")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module, with the mpi runtime env registered and a fake GPU
    (Ray then sets CUDA_VISIBLE_DEVICES for tasks that ask for it)."""
    import ray
    import raympi

    raympi.init_ray(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS_DIR)}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def netns_cluster():
    """A Ray cluster of a head (no CPUs) and 2 workers of 2 CPUs, each node in network, mount,
    UTS and PID namespaces of its own (see scripts/netns_cluster.py); removed after the module."""
    with start_netns_cluster(workers=2, slots=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def embedded_ray():
    """RayMPIJob tasks start their own Ray (the plugin's embedded one); stop it when the module is done. A Ray
    connected already belongs to someone else (the module fixtures of others end with their module), and the
    tasks would run on it."""
    import ray

    assert not ray.is_initialized(), "a Ray is connected already: RayMPIJob tasks would run on it, not on their own"
    yield
    ray.shutdown()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:  # gone, or exiting (ESRCH)
        return False


def wait_until_gone(pids, within: float = 15.0) -> set:
    """The pids still alive after `within` seconds (empty when all are gone)."""
    deadline = time.monotonic() + within
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def recorded_pids(path: Path) -> set:
    """Rank pids and their mpirun pids written by mpi_entries.record_pids."""
    return {int(p) for line in path.read_text().split("\n") if line for p in line.split()}


def seconds_since_failure(pids_file: Path) -> float:
    """Seconds since a rank failed (mpi_entries.fail): world start-up, slow on a loaded machine, excluded."""
    return time.time() - float(Path(f"{pids_file}.failed").read_text())


def marked_processes(marker: str) -> set:
    """Live processes whose environment holds `marker` ("NAME=value"), inherited from whoever started Ray."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() + b"\0" in f.read() + b"\0" and alive(int(entry)):
                    found.add(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def processes_naming(text: str) -> set:
    """Live processes whose command line holds `text`, but this one."""
    return {int(pid) for pid in os.listdir("/proc")
            if pid.isdigit() and int(pid) != os.getpid() and text in command_line(int(pid)) and alive(int(pid))}


def command_line(pid: int) -> str:
    """The process's command line, or "" once it is gone or exiting (ESRCH)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""



def run_leaving_nothing(argv: list, cwd: Path, env: dict, warm: bool = False,
                        timeout: float = 240) -> subprocess.CompletedProcess:
    """`argv` run in `cwd` with `env`; every process it leaves running, every file it leaves in /dev/shm, is a failure.
    Warm worlds off unless `warm`: MPICH's world killed at the driver's exit while it starts leaves its shared memory
    (README)."""
    marker = f"RAYMPI_TEST_MARK={uuid.uuid4().hex}"
    env = {**env, "RAYMPI_WARM_WORLDS": "1" if warm else "0", **dict([marker.split("=")])}
    before = set(Path("/dev/shm").iterdir())
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert wait_until_gone(marked_processes(marker), within=30) == set(), f"processes of {argv} outlived it"
    assert set(Path("/dev/shm").iterdir()) - before == set(), f"{argv} left shared memory behind"
    return done
