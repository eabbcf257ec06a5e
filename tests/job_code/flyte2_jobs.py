"""Flyte 2 tasks with RayMPIJob, run by tests/test_flyte2.py: locally (flyte.run) and as the Ray job the Flyte 2
backend makes of them (`a0` as the driver)."""

import os
import time
from pathlib import Path
from typing import List

import flyte
import flyte.report
from failing_rank import fail_while_the_others_wait
from flyteplugins.raympi import RayMPIJob, Worker

env = flyte.TaskEnvironment(name="mpi", plugin_config=RayMPIJob(worker=Worker(replicas=1), slots=2))


def _row(x: int) -> str:
    """"<rank>/<size> <pid> <allreduce of x * (rank + 1)> <flyte.ctx()'s action name> <process title>" (a warm
    world's rank 0 is titled ray::World...), and a line printed."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    action = flyte.ctx().action.name if flyte.ctx() else "-"
    print(f"rank {comm.rank} of {comm.size} reporting", flush=True)
    title = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    return f"{comm.rank}/{comm.size} {os.getpid()} {comm.allreduce(x * (comm.rank + 1))} {action} {title}"


@env.task
async def rows(x: int) -> List[str]:
    """Every rank's row, gathered on rank 0 (a coroutine function: every rank runs it)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(_row(x), root=0)


@env.task
def rows_sync(x: int) -> List[str]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(_row(x), root=0)


@env.task
def failing(rank: int, failed_at: str) -> int:
    return fail_while_the_others_wait(rank, failed_at)


@env.task
def checkpointed(saver: int) -> str:
    """Rank `saver` saves the attempt's checkpoint; every rank sees where it goes."""
    from mpi4py import MPI

    checkpoint = flyte.ctx().checkpoint
    if MPI.COMM_WORLD.rank == saver:
        checkpoint.save_sync(b"saved by rank %d" % saver)
    MPI.COMM_WORLD.barrier()
    return checkpoint.remote_destination


@env.task(report=True)
async def reported(x: int) -> int:
    """Rank 0 logs to the run's report; the world's tab is added beside it, with each rank's output."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(x * (comm.rank + 1))
    print(f"rank {comm.rank} of {comm.size} reporting", flush=True)
    if comm.rank == 0:
        await flyte.report.log.aio(f"<p>the total is {total}</p>")
    return total


fanning = flyte.TaskEnvironment(name="fan", depends_on=[env])


@fanning.task
async def fan_out(xs: List[int]) -> List[List[str]]:
    """`rows` mapped over `xs` (flyte.map): every element a world of its own."""
    return [element async for element in flyte.map.aio(rows, xs)]


def run_rows(out: str) -> dict:
    """flyte.run of the coroutine and the plain function, twice each (warm worlds), and a call outside a run."""
    return {"rows": [flyte.run(rows, x=2).outputs()[0], flyte.run(rows, x=3).outputs()[0]],
            "rows_sync": [flyte.run(rows_sync, x=2).outputs()[0], flyte.run(rows_sync, x=3).outputs()[0]],
            "direct": rows_sync(x=1)}


def run_mapped(out: str) -> dict:
    return {"elements": flyte.run(fan_out, xs=[1, 2, 3]).outputs()[0]}


def run_failing(out: str) -> dict:
    """The error, and the seconds from the rank's failure to the error."""
    failed_at = f"{out}.failed"
    try:
        flyte.run(failing, rank=1, failed_at=failed_at)
        return {"error": None}
    except Exception as error:  # noqa: BLE001 -- what the caller sees is the result
        failed = float(Path(failed_at).read_text())
        return {"error": f"{type(error).__name__}: {error}", "seconds": time.time() - failed}


def run_checkpointed(out: str) -> dict:
    """Where rank 0's save went and what it holds; what rank 1's save raised."""
    destination = flyte.run(checkpointed, saver=0).outputs()[0]
    try:
        flyte.run(checkpointed, saver=1)
        error = None
    except Exception as failed:  # noqa: BLE001 -- what the caller sees is the result
        error = f"{type(failed).__name__}: {failed}"
    return {"saved": Path(destination).read_text(), "error": error}


def run_reported(out: str) -> dict:
    """The output, and the report the run wrote."""
    run = flyte.run(reported, x=2)
    reports = list(Path(run.url).glob("*/report.html"))
    return {"total": run.outputs()[0], "reports": [path.read_text() for path in reports]}


if __name__ == "__main__":
    import json
    import sys

    case, out = sys.argv[1:]
    flyte.init()
    cases = {"rows": run_rows, "mapped": run_mapped, "failing": run_failing, "checkpointed": run_checkpointed,
             "reported": run_reported}
    Path(out).write_text(json.dumps(cases[case](out)))
