"""The flagship pi on Flyte 2: the same RayMPIJob, as a TaskEnvironment's plugin_config, estimating pi with mpi4py on 4
MPI ranks (2 workers x 2 slots) on an embedded Ray; on a cluster, the ranks run on two worker pods, two on each.

    python examples/pi_flyte2.py     # or: flyte run --local examples/pi_flyte2.py estimate_pi --samples 200000

The task is a coroutine: every rank runs it (and `flyte.ctx()` is the run's on each); rank 0's return value is the
task's.
"""

import os
import socket
from typing import List, Tuple

import flyte
import numpy as np
from flyteplugins.raympi import Launcher, RayMPIJob, Worker

env = flyte.TaskEnvironment(name="pi",
                            plugin_config=RayMPIJob(launcher=Launcher(replicas=1), worker=Worker(replicas=2), slots=2))


@env.task
async def estimate_pi(samples: int = 200_000) -> Tuple[float, List[str]]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    points = np.random.default_rng(seed=comm.rank).uniform(size=(samples, 2))
    hits = comm.allreduce(int(((points**2).sum(axis=1) <= 1.0).sum()))
    ranks = comm.gather(f"rank {comm.rank} of {comm.size}: pid {os.getpid()} on {socket.gethostname()} "
                        f"in run {flyte.ctx().action.run_name}", root=0)
    return 4.0 * hits / (samples * comm.size), ranks


if __name__ == "__main__":
    flyte.init()
    pi, ranks = flyte.run(estimate_pi).outputs()
    print("\n".join(ranks))
    print(f"pi ~= {pi:.5f} from {len(ranks)} MPI ranks")
