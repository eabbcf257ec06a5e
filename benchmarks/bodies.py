"""The MPI work that every launcher runs, the same code everywhere.

Each body stamps, on every rank, when it started and ended (and when its process and its parent
started) into the directory named by the session settings, so that the harness can split a launch
into phases from outside the product. Only mpi4py and numpy are imported, and only when a body runs:
plain mpirun pays nothing it would not pay anyway.

    mpirun -n 2 python -m benchmarks.bodies launch      # how plain mpirun runs them
"""

import json
import os
import sys
import time
from pathlib import Path

from benchmarks import procinfo

# The session's settings (JSON), set by the harness before anything starts: every rank inherits it.
SETTINGS_ENV = "RAYMPI_BENCH"
MIB = 1 << 20
BATCH = 32  # images per step on each rank, as in examples/horovod_digits.py


def settings() -> dict:
    return json.loads(os.environ.get(SETTINGS_ENV) or "{}")


def launch() -> int:
    """Allreduce of one int: the smallest job that needs every rank."""
    from mpi4py import MPI

    enter = time.time()
    total = MPI.COMM_WORLD.allreduce(1)
    _stamp(enter, total)
    return total


def hosts() -> list[str]:
    """Every rank's host name, rank 0's first: where the world ran (an allgather: it needs every rank too)."""
    import socket

    from mpi4py import MPI

    enter = time.time()
    names = MPI.COMM_WORLD.allgather(socket.gethostname())
    _stamp(enter, names)
    return names


def bandwidth() -> dict:
    """Per buffer size (MiB, float64): achieved allreduce bandwidth in bytes/s, the buffer's size over the
    median time of one allreduce."""
    import numpy as np
    from mpi4py import MPI

    enter = time.time()
    comm, config = MPI.COMM_WORLD, settings()
    achieved = {}
    for mib in config.get("sizes_mib", [1]):
        send = np.ones(mib * MIB // 8)
        received = np.empty_like(send)
        comm.Allreduce(send, received)  # warm-up: connections, page faults
        times = []
        for _ in range(config.get("iterations", 5)):
            start = time.perf_counter()
            comm.Allreduce(send, received)
            times.append(time.perf_counter() - start)
        achieved[str(mib)] = send.nbytes / sorted(times)[len(times) // 2]
    _stamp(enter, achieved)
    return achieved


def horovod() -> float:
    """Images/s of the Horovod example's training step (its model, a batch of 32 on each rank, gradients
    averaged by Horovod's allreduce), all ranks together, over the timed steps after a warm-up."""
    import horovod.torch as hvd
    import torch
    from mpi4py import MPI  # noqa: F401 -- MPI initialized here, as RayMPIJob's ranks have it before the body

    from examples.horovod_digits import digits_model

    enter = time.time()
    hvd.init()
    config = settings()
    model = digits_model()
    optimizer = hvd.DistributedOptimizer(torch.optim.Adam(model.parameters()), named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    images, labels = torch.rand(BATCH, 64), torch.randint(0, 10, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def steps(count: int) -> None:
        for _ in range(count):
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()

    steps(10)
    count = config.get("steps", 100)
    hvd.allreduce(torch.zeros(1), name="start")  # every rank starts the clock together
    start = time.perf_counter()
    steps(count)
    rate = hvd.size() * BATCH * count / (time.perf_counter() - start)
    _stamp(enter, rate)
    return rate


def _stamp(enter: float, result) -> None:
    folder = settings().get("stamps")
    if not folder:
        return
    from mpi4py import MPI

    from raympi.forked import launcher_pid

    pid, ppid = os.getpid(), launcher_pid()  # mpirun, for a rank forked from a template too
    stamp = {
        "rank": MPI.COMM_WORLD.rank,
        "pid": pid,
        "enter": enter,
        "exit": time.time(),
        "started": procinfo.started(pid),
        "parent": procinfo.name(ppid),
        "parent_pid": ppid,
        "parent_started": procinfo.started(ppid),
        "result": result,
    }
    Path(folder, f"{stamp['rank']}.json").write_text(json.dumps(stamp))


if __name__ == "__main__":
    globals()[sys.argv[1]]()
