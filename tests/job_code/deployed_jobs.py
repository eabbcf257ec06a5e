"""Tasks run on the container cluster (tests/test_as_deployed.py): they import only what the image has."""

import os
import socket
from pathlib import Path
from typing import List, Tuple

from flytekit import current_context, task
from flytekit.types.file import FlyteFile
from flytekitplugins.raympi import RayMPIJob, Worker

TWO_PODS = RayMPIJob(worker=Worker(replicas=2), slots=2)


def report(fail_on_rank: int) -> Tuple[List[str], FlyteFile]:
    """Each rank's "rank host uid"; rank 0 writes them to a file it returns."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    print(f"rank {comm.rank} of {comm.size} on {socket.gethostname()}", flush=True)
    if comm.rank == fail_on_rank:
        raise RuntimeError(f"rank {comm.rank} failed on purpose")
    rows = comm.gather(f"{comm.rank} {socket.gethostname()} {os.getuid()}", root=0)
    path = Path(current_context().working_directory) / "ranks.txt"
    if comm.rank == 0:
        path.write_text("\n".join(rows) + "\n")
    return rows, FlyteFile(str(path))


@task(task_config=TWO_PODS)
def ranks(fail_on_rank: int) -> (List[str], FlyteFile):
    return report(fail_on_rank)


@task(task_config=TWO_PODS, enable_deck=True)
def decked() -> List[str]:
    return report(-1)[0]


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2, flavour="mpich"))
def ranks_mpich() -> List[str]:
    return report(-1)[0]


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=1))
def horovod_ranks() -> List[str]:
    """Horovod's view of the world: "rank/size local_rank host" of each rank, allgathered by Horovod."""
    import horovod.torch as hvd
    from mpi4py import MPI  # noqa: F401  (MPI initialized by mpi4py first, as RayMPIJob's ranks do)

    hvd.init()
    return hvd.allgather_object(f"{hvd.rank()}/{hvd.size()} {hvd.local_rank()} {socket.gethostname()}")
