"""Worker entries (what ranks 1..N-1 run) and helpers for the runtime env tests.

Ray workers import this module by name: the tests put this folder on their PYTHONPATH.
"""

import os
import signal
import socket
import threading
import time

from mpi4py import MPI

from raympi.forked import launcher_pid


def count_inside(samples: int) -> int:
    """Monte Carlo pi: points of this rank inside the unit quarter circle, summed on rank 0."""
    import numpy as np

    comm = MPI.COMM_WORLD
    points = np.random.default_rng(comm.rank).uniform(size=(samples, 2))
    return comm.reduce(int(((points ** 2).sum(axis=1) < 1).sum()), root=0)


def pi_worker():
    count_inside(MPI.COMM_WORLD.bcast(None, root=0))


def actor_worker():
    """Mirrors MPIActor: each method call broadcasts a number; None ends the loop."""
    comm = MPI.COMM_WORLD
    while (n := comm.bcast(None, root=0)) is not None:
        comm.reduce(n * comm.rank, root=0)


def report_worker():
    """Gathers what rank 0 wants to know about each rank."""
    comm = MPI.COMM_WORLD
    comm.gather(describe(), root=0)


def describe() -> dict:
    return {
        "rank": MPI.COMM_WORLD.rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "mpirun": launcher_pid(),
        "forked": launcher_pid() != os.getppid(),  # from a template (raympi.template)
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpus": sorted(os.sched_getaffinity(0)),
        "nice": os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),  # of this thread (Linux)
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "btl": os.environ.get("OMPI_MCA_btl"),
        "through": os.environ.get("RAYMPI_THROUGH"),
    }


def record_pids(path: str) -> None:
    """Append this rank's pid and its launcher's (mpirun's) to `path`, for the leak checks."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {launcher_pid()}\n")


def fail(mode: str, path: str) -> None:
    """Fail as `mode` says, after writing the time of failure to `path`.failed."""
    with open(f"{path}.failed", "w") as f:
        f.write(str(time.time()))
    if mode == "raise":
        raise ValueError(f"rank {MPI.COMM_WORLD.rank} was told to fail")
    if mode == "abort":
        MPI.COMM_WORLD.Abort(7)
    if mode == "exit":
        os._exit(7)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(3600)


def failing_worker():
    """Rank 1 fails as rank 0 says; the others wait in a barrier, as a real job would."""
    comm = MPI.COMM_WORLD
    path, failing_rank, mode = comm.bcast(None, root=0)
    record_pids(path)
    comm.barrier()  # every rank is on record before any fails
    if comm.rank == failing_rank:
        fail(mode, path)
    comm.barrier()


def fail_beside_frozen_rank0(path: "str | None" = None, mode: str = "raise", chatty: bool = False) -> None:
    """Rank 0 blocks in an MPI call that holds the GIL (mpi4py's first reduction on a new communicator
    duplicates it until every rank joins); rank 1 fails as `mode` says once it has, with `chatty` while a thread of
    it writes on."""
    comm = MPI.COMM_WORLD
    path, mode, chatty = comm.bcast((path, mode, chatty), root=0)
    record_pids(path)
    fresh = comm.Dup()
    if comm.rank == 0:
        open(f"{path}.frozen", "w").close()
        fresh.allreduce(0)
    else:
        while not os.path.exists(f"{path}.frozen"):
            time.sleep(0.1)
        if chatty:
            threading.Thread(target=lambda: [print("progress " * 100, flush=True) for _ in iter(int, 1)],
                             daemon=True).start()
        time.sleep(1)
        fail(mode, path)


def noisy_worker():
    comm = MPI.COMM_WORLD
    print(f"hello from stdout of {comm.rank}", flush=True)
    os.write(2, f"hello from stderr of {comm.rank}\n".encode())
    comm.barrier()


def hold_until_released(path: "str | None" = None) -> int:
    """Every rank records its pids, then waits until `path`.go exists; the sum of the ranks."""
    comm = MPI.COMM_WORLD
    path = comm.bcast(path, root=0)
    record_pids(path)
    while not os.path.exists(f"{path}.go"):
        time.sleep(0.1)
    return comm.allreduce(comm.rank)


def shared_pi(samples: "int | None" = None) -> "int | None":
    """Ray's documented pattern: rank 0's task and the worker entry share one function that calls mpi_init()
    first; rank 0 gets the number of points inside the quarter circle."""
    from raympi import mpi_init

    mpi_init()
    return count_inside(MPI.COMM_WORLD.bcast(samples, root=0))


def wait_in_barrier(path: "str | None" = None) -> None:
    """Every rank records its pids; rank 0 then waits in a barrier that the others never join."""
    comm = MPI.COMM_WORLD
    path = comm.bcast(path, root=0)
    record_pids(path)
    if comm.rank == 0:
        comm.barrier()
    time.sleep(3600)
