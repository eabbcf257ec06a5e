"""The same RayMPIJobs on every MPI flavour: RAYMPI_TEST_FLAVOUR picks the `flavour` field, nothing else changes.
tests/test_flavours.py runs this file in the flavour's own venv:

    python flavoured.py world|forked|failing|aborting|bad_args <out.json>
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Tuple

from failing_rank import fail_while_the_others_wait
from flytekit import current_context, task, workflow
from flytekit.types.file import FlyteFile
from flytekitplugins.raympi import RayMPIJob

FLAVOUR = os.environ.get("RAYMPI_TEST_FLAVOUR", "openmpi")


@task(task_config=RayMPIJob(slots=4, flavour=FLAVOUR))
def world(x: int, data: FlyteFile) -> Tuple[List[str], FlyteFile]:
    """Each rank: "<rank>/<size> <pid> <allreduce> <library> <parent>" (the parent's program, or "template" for a
    rank forked from a template); rank 0 returns the input file's text, reversed."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(x * (comm.rank + 1))
    print(f"hello from rank {comm.rank}", flush=True)
    library = MPI.Get_library_version().split()[0]
    rows = comm.gather(f"{comm.rank}/{comm.size} {os.getpid()} {total} {library} {_parent()}", root=0)
    reversed_text = Path(current_context().working_directory) / "reversed.txt"
    reversed_text.write_text(Path(data.download()).read_text()[::-1])
    return rows, FlyteFile(str(reversed_text))


def _parent() -> str:
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
        if b"raympi.template" in cmdline.read():
            return "template"
    with open(f"/proc/{os.getppid()}/comm") as comm:
        return comm.read().strip()


@task(task_config=RayMPIJob(slots=4, flavour=FLAVOUR))
def failing(rank: int, failed_at: str) -> int:
    return fail_while_the_others_wait(rank, failed_at)


@task(task_config=RayMPIJob(slots=3, flavour=FLAVOUR))
def aborting(rank: int, code: int, failed_at: str) -> int:
    return fail_while_the_others_wait(rank, failed_at, abort=code)


@task(task_config=RayMPIJob(slots=2, flavour=FLAVOUR, mpirun_args=["--no-such-flag"]))
def bad_args() -> int:
    return 1


@workflow
def world_workflow(x: int, data: FlyteFile) -> Tuple[List[str], FlyteFile]:
    return world(x=x, data=data)


def run_world(out: str) -> list:
    """Two calls in a row: each call's rows and the text of its file."""
    data = Path(out).with_suffix(".in")
    data.write_text("flavours")
    calls = [world_workflow(x=x, data=FlyteFile(str(data))) for x in (1, 2)]
    return [{"rows": rows, "file": Path(file.download()).read_text()} for rows, file in calls]


def run_forked(out: str) -> list:
    """`world` called twice, 1 s apart: each call's rows."""
    data = Path(out).with_suffix(".in")
    data.write_text("templates")
    calls = [world(x=1, data=FlyteFile(str(data)))[0]]
    time.sleep(1)
    return [*calls, world(x=1, data=FlyteFile(str(data)))[0]]


def run_failing(out: str) -> dict:
    """The error, and the seconds from the rank's failure to the error."""
    return _failure(failing, out, rank=2)


def run_aborting(out: str) -> list:
    """The failures of a peer's MPI_Abort (rank 2, error code 7) and of rank 0's (error code 3), as run_failing's."""
    return [_failure(aborting, out, rank=rank, code=code) for rank, code in ((2, 7), (0, 3))]


def _failure(failing_task, out: str, **inputs) -> dict:
    """The error of `failing_task` called with `inputs`, and the seconds from the rank's failure to the error."""
    failed_at = f"{out}.failed"
    try:
        failing_task(failed_at=failed_at, **inputs)
        return {"error": None}
    except Exception as error:  # noqa: BLE001 -- what the caller sees is the result
        failed = float(Path(failed_at).read_text())
        return {"error": f"{type(error).__name__}: {error}", "seconds": time.time() - failed}


def run_bad_args(out: str) -> dict:
    """The error, and the seconds from the call (the embedded Ray's start included) to the error."""
    called = time.time()
    try:
        bad_args()
        return {"error": None}
    except Exception as error:  # noqa: BLE001 -- what the caller sees is the result
        return {"error": f"{type(error).__name__}: {error}", "seconds": time.time() - called}


if __name__ == "__main__":
    case, out = sys.argv[1:]
    cases = {"world": run_world, "forked": run_forked, "failing": run_failing, "aborting": run_aborting,
             "bad_args": run_bad_args}
    Path(out).write_text(json.dumps(cases[case](out)))

