"""The body of every SDK's failing test task: one rank raises while the others wait in a barrier."""

import time
from pathlib import Path


def fail_while_the_others_wait(rank: int, failed_at: str, abort: int = 0) -> int:
    """`rank` raises, or with `abort` calls MPI_Abort with that error code (noting when in `failed_at`), while the
    others wait in a barrier; they return their rank."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.rank == rank:
        Path(failed_at).write_text(str(time.time()))
        if abort:
            comm.Abort(abort)
        raise ValueError(f"rank {rank} gives up")
    comm.barrier()
    return comm.rank
