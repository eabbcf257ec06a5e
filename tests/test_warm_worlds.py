"""Warm worlds (flytekitplugins.raympi.warm): on the embedded Ray a call runs in a world started ahead of it, never in
one that ran an earlier call, and with warm worlds off no world outlives its call (nor did Ray start a spare worker
of its own, on a Ray that runs RayMPIJob tasks only, as here: see benchmarks/README.md). Processes are read from
/proc: a warm world's rank 0 is titled `ray::World`."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import List

import pytest
import ray
from flytekit import Resources, current_context, task
from ray.util import placement_group_table

from benchmarks import procinfo
from benchmarks.harness import MPIRUN_NAMES
from benchmarks.procinfo import started
from conftest import TESTS_DIR, command_line, marked_processes, processes_naming, wait_until_gone
from flytekitplugins.raympi import RayMPIJob, Worker, warm
from flytekitplugins.raympi.warm import WARM_WORLDS_VAR
from raympi import MPIRankError

pytestmark = pytest.mark.usefixtures("embedded_ray")
# In the environment of the embedded Ray this module's first task starts, so of every rank: tells its processes.
MARKER = f"RAYMPI_TEST_RUN={os.environ.setdefault('RAYMPI_TEST_RUN', uuid.uuid4().hex)}"
CALLS: List[int] = []  # per process: a rank that ran an earlier call has more than one


@task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
def world_state(x: int) -> List[str]:
    """Each rank: "pid started calls x working_directory"."""
    from mpi4py import MPI

    CALLS.append(x)
    comm = MPI.COMM_WORLD
    total = comm.allreduce(x)
    return comm.gather(f"{os.getpid()} {started(os.getpid())} {len(CALLS)} {total} "
                       f"{current_context().working_directory}", root=0)


@task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
def fails_on(rank: int) -> int:
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == rank:
        raise RuntimeError(f"rank {rank} failed on purpose")
    MPI.COMM_WORLD.barrier()
    return 0


def worlds(rank0_title: str = "") -> set:
    """The processes of this module's MPI worlds, warm or running a call: each mpirun, what it started, and the ranks
    those are (forked from a template for them: benchmarks.procinfo.rank_of); with `rank0_title`, of the worlds with a
    rank so titled only."""
    found = set()
    for mpirun in marked_processes(MARKER) & set(procinfo.named(MPIRUN_NAMES)):
        started = set(procinfo.children(mpirun))
        ranks = {procinfo.rank_of(child) for child in started}
        if not rank0_title or any(command_line(rank).startswith(rank0_title) for rank in ranks):
            found |= {mpirun, *started, *ranks}
    return found


def unforked(processes: set) -> set:
    """The shims among `processes` whose rank is not forked yet."""
    return {pid for pid in processes if procinfo.is_shim(pid) and procinfo.rank_of(pid) == pid}


def worlds_left() -> set:
    """The module's world processes left once the last call's world had time to end; and none waits to start. A warm
    world starts only when the driver asks (then `warm` holds it); a spare of Ray's own is started for a lease request
    (see benchmarks/README.md), so during the call, and its mpirun is then among `worlds()` already."""
    left = wait_until_gone(worlds())
    assert warm._waiting is None, "a warm world was started"
    return left


def warm_world() -> set:
    """The processes of this module's warm world: its mpirun, with rank 0 (`ray::World`) and the other ranks."""
    return worlds(rank0_title="ray::World")


def wait_for_warm_world(ranks: int, timeout: float = 120) -> set:
    deadline = time.monotonic() + timeout
    while len(idle := warm_world()) < ranks + 1 or unforked(idle):  # and mpirun
        assert time.monotonic() < deadline, f"no warm world of {ranks} ranks started: {idle}"
        time.sleep(0.2)
    return idle


def test_a_call_runs_in_a_world_started_for_it_never_in_one_that_ran_before():
    first = [row.split() for row in world_state(x=1)]
    idle = wait_for_warm_world(ranks=2)
    began = time.time()
    second = [row.split() for row in world_state(x=2)]
    assert [row[2:4] for row in first] == [["1", "2"]] * 2 and [row[2:4] for row in second] == [["1", "4"]] * 2, \
        "each rank of each call ran that call only, with its inputs"
    assert {int(row[0]) for row in second} < idle and not {row[0] for row in first} & {row[0] for row in second}, \
        "the second call ran in the idle world, not in the first call's"
    assert all(float(row[1]) < began for row in second), "its ranks started before the call"
    assert not any(os.path.exists(row[4]) for row in first + second), "every rank's working directory is removed"
    assert wait_until_gone({int(row[0]) for row in first}) == set(), "the first call's world ended with it"


def test_a_rank_failing_in_a_warm_world_fails_the_call_and_ends_that_world():
    world_state(x=1)
    idle = wait_for_warm_world(ranks=2)
    with pytest.raises(MPIRankError, match="MPI rank 1 .* raised RuntimeError: rank 1 failed on purpose"):
        fails_on(rank=1)
    assert wait_until_gone(idle) == set(), "the failed world's processes"


def test_with_warm_worlds_off_none_is_started_and_the_waiting_one_ends(monkeypatch):
    world_state(x=1)
    idle = wait_for_warm_world(ranks=2)
    assert idle <= worlds()
    monkeypatch.setenv(WARM_WORLDS_VAR, "0")
    ran = {int(row.split()[0]) for row in world_state(x=1)}
    assert not ran & idle, "the warm world waiting when they were turned off served a call"
    assert wait_until_gone(idle) == set(), "the warm world waiting when they were turned off is ended"
    assert worlds_left() == set(), "the call's world outlived it, or one was started after: ours (warm) or Ray's"


@task(task_config=RayMPIJob(worker=Worker(requests=Resources(gpu="2")), slots=2))
def gpu_world() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.allreduce(1)


def test_an_idle_world_holds_no_reservation_and_a_gpu_task_gets_none():
    world_state(x=1)
    wait_for_warm_world(ranks=2)
    assert [g for g in placement_group_table().values() if g["state"] != "REMOVED"] == [], "no placement group"
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"], "every CPU is free"
    assert gpu_world() == 2  # on the embedded Ray restarted with the GPUs it needs, declared (this machine has none)
    assert worlds_left() == set(), "the GPU task's world or the CPU task's warm one outlived it, or one was started"


def test_an_unknown_warm_worlds_setting_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv(WARM_WORLDS_VAR, "yes")
    with pytest.raises(ValueError, match=f"{WARM_WORLDS_VAR}='yes': 1 keeps a warm world for the next call, 0 keeps "
                                         "none"):
        world_state(x=1)


def test_nothing_of_a_warm_world_survives_its_driver():
    driver = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_warm_worlds import world_state, wait_for_warm_world
        world_state(x=1)
        wait_for_warm_world(ranks=2)
    """)
    marker = f"RAYMPI_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    subprocess.run([sys.executable, "-c", driver], check=True, timeout=300, capture_output=True,
                   env={**os.environ, name: value})
    left = wait_until_gone(marked_processes(marker), within=30)
    assert left == set(), [command_line(p)[:200] for p in left]


def test_a_driver_that_exits_right_after_a_call_leaves_nothing_behind(tmp_path):
    """Open MPI's shared memory (in /dev/shm unless btl_sm_backing_directory says otherwise; here the test's own
    folder, which no other world uses) is removed when the world ends, the warm one started as the driver exits too;
    so are the temporary directories of every rank and template: flytekit makes two in every process that imports it
    and never removes them (flytekitplugins/raympi/flytekit_internals.py, 6), so only the drivers' own stay."""
    driver = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_warm_worlds import world_state
        world_state(x=1)
    """)
    shared_memory, temp = tmp_path / "shm", Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's sockets
    shared_memory.mkdir()
    env = {**os.environ, "OMPI_MCA_btl_sm_backing_directory": str(shared_memory), "TMPDIR": str(temp),
           "RAYMPI_TEST_RUN": uuid.uuid4().hex}
    try:
        for _ in range(2):
            subprocess.run([sys.executable, "-c", driver], check=True, timeout=300, capture_output=True, env=env)
        assert wait_until_gone(marked_processes(f"RAYMPI_TEST_RUN={env['RAYMPI_TEST_RUN']}")) == set()
        assert wait_until_gone(processes_naming(str(shared_memory))) == set(), "the watchers of its directories"
        assert sorted(p.name for p in shared_memory.iterdir()) == []
        assert len(list(temp.glob("flyte*"))) == 2 * 2, "two per driver, none of a rank"
        assert list(temp.glob("raympi-templates-*/*")) == [], "nor of a template (it makes a forked rank's)"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_shut_down_while_the_warm_world_starts_leaves_nothing_of_it():
    """The driver's own ray.shutdown(), once the warm world's ranks made their shared memory (in MPI_Init): Ray
    SIGKILLs a worker process still starting, here that world's mpirun, which removes nothing then (it left 3 segments
    of 16 MiB and its session directory)."""
    driver = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        import ray
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_warm_worlds import world_state
        world_state(x=1)
        deadline = time.monotonic() + 60
        while not list(Path(os.environ["OMPI_MCA_btl_sm_backing_directory"]).rglob("sm_segment.*")):
            assert time.monotonic() < deadline, "the warm world made no shared memory"
            time.sleep(0.01)
        ray.shutdown()
    """)
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's sockets
    shared_memory = temp / "shm"
    shared_memory.mkdir()
    env = {**os.environ, "OMPI_MCA_btl_sm_backing_directory": str(shared_memory), "TMPDIR": str(temp),
           "RAYMPI_TEST_RUN": uuid.uuid4().hex}
    try:
        done = subprocess.run([sys.executable, "-c", driver], timeout=300, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert wait_until_gone(marked_processes(f"RAYMPI_TEST_RUN={env['RAYMPI_TEST_RUN']}")) == set()
        assert wait_until_gone(processes_naming(str(shared_memory))) == set(), "the watchers of its directories"
        assert sorted(p.name for p in shared_memory.iterdir()) == []
        assert sorted(p.name for p in temp.glob("ompi.*")) == [], "mpirun's session directory"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this input cannot be pickled")


def test_a_call_that_fails_before_it_runs_leaves_the_warm_world_to_the_next():
    world_state(x=1)
    idle = wait_for_warm_world(ranks=2)
    lock = Unpicklable()

    @task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
    def holds_a_lock(x: int) -> int:  # the same world as world_state's
        return x if lock else 0

    with pytest.raises(TypeError, match="this input cannot be pickled") as failed:
        holds_a_lock(x=1)
    # Kept, as a notebook keeps the last error: its frames hold what the call had.
    assert failed.value
    ran = {int(row.split()[0]) for row in world_state(x=2)}
    assert ran < idle, "the next call ran in the warm world"
    assert wait_until_gone(idle) == set(), "which ended with it"


def test_a_warm_world_that_lost_a_rank_while_idle_is_not_handed_out():
    world_state(x=1)
    idle = wait_for_warm_world(ranks=2)
    rank0 = {pid for pid in idle if command_line(pid).startswith("ray::World")}
    peer = {pid for pid in idle - rank0 - set(procinfo.named(MPIRUN_NAMES)) if not procinfo.is_shim(pid)}
    os.kill(peer.pop(), 9)
    rows = [row.split() for row in world_state(x=2)]
    assert [row[2:4] for row in rows] == [["1", "4"]] * 2, "the call ran, in a world of its own"
    assert not {int(row[0]) for row in rows} & idle
    assert wait_until_gone(idle) == set(), "the broken world's processes"
