"""RayMPIJob tasks run for real: flytekit local execution, an embedded Ray, mpirun, mpi4py."""

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pandas as pd
import pytest
from flytekit import current_context, task, workflow
from flytekit.core.base_task import IgnoreOutputs
from flytekit.types.file import FlyteFile

from conftest import recorded_pids, seconds_since_failure, wait_until_gone
from flytekitplugins.raympi import ActiveDeadlineExceeded, RayMPIJob, RunPolicy, Worker
from raympi import MPIRankError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("embedded_ray")


@dataclass
class Scale:
    factor: int
    label: str


def world(workers: int = 1, slots: int = 2, **kwargs) -> RayMPIJob:
    return RayMPIJob(worker=Worker(replicas=workers), slots=slots, **kwargs)


@task(task_config=world(slots=2))
def two_ranks(x: int) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce((comm.rank + 1) * x)
    return comm.gather(f"{comm.rank}/{comm.size}:{socket.gethostname()}:{os.getpid()}:{total}", root=0)


@task(task_config=world(workers=2, slots=2))
def four_ranks(x: int) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce((comm.rank + 1) * x)
    return comm.gather(f"{comm.rank}/{comm.size}:{socket.gethostname()}:{os.getpid()}:{total}", root=0)


@pytest.mark.parametrize("body, size", [(two_ranks, 2), (four_ranks, 4)])
def test_every_rank_takes_part(body, size):
    @workflow
    def wf(x: int) -> List[str]:
        return body(x=x)

    rows = [row.split(":") for row in wf(x=10)]
    assert [r[0] for r in rows] == [f"{rank}/{size}" for rank in range(size)]
    assert len({r[2] for r in rows}) == size, "each rank is its own process"
    assert {r[3] for r in rows} == {str(10 * size * (size + 1) // 2)}


@task(task_config=world(slots=3))
def ray_imported() -> List[bool]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather("ray" in sys.modules, root=0)


def test_only_rank0_imports_ray():
    """Rank 0 is the Ray worker; Ray's import, a second of CPU, would only delay the peers' start."""
    assert ray_imported() == [True, False, False]


@task(task_config=world(slots=3))
def read_everywhere(data: FlyteFile, scale: Scale, frame: pd.DataFrame) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    with open(data) as f:
        content = f.read().strip()
    row = (f"{comm.rank}|{current_context().working_directory}|{content}|{scale.factor * comm.rank}{scale.label}"
           f"|{frame['v'].iloc[comm.rank::comm.size].sum()}")
    rows = comm.gather(row, root=0)
    if comm.rank != 0:
        raise IgnoreOutputs("only rank 0's outputs count")
    return rows


def test_inputs_of_every_kind_and_context_work_on_every_rank(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("shared input\n")

    @workflow
    def wf(data: FlyteFile, scale: Scale, frame: pd.DataFrame) -> List[str]:
        return read_everywhere(data=data, scale=scale, frame=frame)

    frame = pd.DataFrame({"v": range(9)})
    rows = [row.split("|") for row in wf(data=FlyteFile(str(source)), scale=Scale(factor=5, label="x"), frame=frame)]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert len({r[1] for r in rows}) == 3, "each rank has its own working directory"
    assert {r[2] for r in rows} == {"shared input"}
    assert [r[3] for r in rows] == ["0x", "5x", "10x"]
    assert [r[4] for r in rows] == ["9", "12", "15"], "each rank read its third of the dataframe"


@task(task_config=world(slots=2))
def write_report(name: str) -> FlyteFile:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    ranks = comm.gather(comm.rank, root=0)
    path = Path(current_context().working_directory) / f"{name}.txt"
    if comm.rank == 0:
        path.write_text(f"ranks {ranks}\n")
    return FlyteFile(str(path))


@task
def read_report(report: FlyteFile) -> str:
    with open(report) as f:
        return f.read().strip()


def test_file_output_of_rank0_reaches_downstream_tasks():
    @workflow
    def wf() -> str:
        return read_report(report=write_report(name="report"))

    assert wf() == "ranks [0, 1]"


@task
def plus_one(values: List[str]) -> int:
    return len(values) + 1


def test_tasks_in_sequence_with_a_regular_task_between():
    @workflow
    def wf(x: int) -> List[str]:
        first = two_ranks(x=x)
        n = plus_one(values=first)
        return four_ranks(x=n)

    assert [row.split(":")[3] for row in wf(x=1)] == ["30"] * 4


@task(task_config=world(slots=3))
def failing(mode: str, failing_rank: int, pids_file: str) -> int:
    from mpi4py import MPI

    sys.path.insert(0, str(Path(__file__).parent))
    import mpi_entries

    comm = MPI.COMM_WORLD
    mpi_entries.record_pids(pids_file)
    comm.barrier()  # every rank is on record before any fails
    if comm.rank == failing_rank:
        mpi_entries.fail(mode, pids_file)
    comm.barrier()
    return comm.rank


def run_failing(tmp_path, mode: str, failing_rank: int, error_type):
    pids_file = tmp_path / "pids"
    with pytest.raises(error_type) as caught:
        failing(mode=mode, failing_rank=failing_rank, pids_file=str(pids_file))
    elapsed = seconds_since_failure(pids_file)
    assert elapsed < 30, f"the failure took {elapsed:.0f} s to reach the caller"
    assert wait_until_gone(recorded_pids(pids_file)) == set(), "MPI processes outlived the failed task"
    return caught.value


def test_peer_that_raises_fails_the_task_naming_the_rank(tmp_path):
    error = run_failing(tmp_path, "raise", 2, MPIRankError)
    assert error.rank == 2
    assert "raised ValueError: rank 2 was told to fail" in str(error)
    assert "Traceback" in str(error)


def test_rank0_that_raises_fails_the_task_with_its_exception(tmp_path):
    error = run_failing(tmp_path, "raise", 0, ValueError)
    assert "rank 0 was told to fail" in str(error)


@pytest.mark.parametrize("limit, message", [
    ({"task_config": world(slots=3, run_policy=RunPolicy(active_deadline_seconds=40))},
     "run_policy.active_deadline_seconds=40 s"),
    ({"task_config": world(slots=3), "timeout": 40}, "longer than timeout=40 s"),
])
def test_a_hung_rank_is_stopped_at_the_deadline(tmp_path, limit, message):
    # 40 s: long enough for the world to start on a loaded 2-core machine, so that a rank really hangs.
    hung = task(**limit)(failing.task_function)
    pids_file = tmp_path / "pids"
    start = time.monotonic()
    with pytest.raises(ActiveDeadlineExceeded, match=message):
        hung(mode="hang", failing_rank=1, pids_file=str(pids_file))
    assert 40 <= time.monotonic() - start < 70
    assert len(recorded_pids(pids_file)) == 4, "three ranks and their mpirun were running"
    assert wait_until_gone(recorded_pids(pids_file)) == set()


def test_peer_output_is_in_the_task_log_with_rank_tags(capfd):
    @task(task_config=world(slots=2))
    def speak() -> int:
        from mpi4py import MPI

        print(f"speaking from rank {MPI.COMM_WORLD.rank}", flush=True)
        MPI.COMM_WORLD.barrier()
        return 0

    speak()
    deadline, seen = time.monotonic() + 15, ""
    while "[rank 1] speaking from rank 1" not in seen and time.monotonic() < deadline:
        time.sleep(0.5)
        captured = capfd.readouterr()
        seen += captured.out + captured.err
    assert "[rank 1] speaking from rank 1" in seen


def test_pyflyte_run_of_the_flagship_example():
    result = subprocess.run(
        [Path(sys.executable).with_name("pyflyte"), "run", "examples/pi.py", "pi_workflow", "--samples", "20000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(4):
        assert f"rank {rank} of 4" in result.stdout
    pi = float(re.search(r"o0=([0-9.]+)", result.stdout).group(1))
    assert abs(pi - 3.1416) < 0.05
