"""Flagship example: estimate pi with mpi4py on 4 MPI ranks (2 workers x 2 slots), as a Flyte workflow on an
embedded Ray; on a cluster, the ranks run on two worker pods, two on each.

    python examples/pi.py            # or: pyflyte run examples/pi.py pi_workflow --samples 200000

Every rank draws its own random points; an allreduce adds up the hits. The task returns the estimate
and which ranks (pid, host) took part, so you can see four processes did the work.
"""

import os
import socket
from typing import List

import numpy as np
from flytekit import task, workflow
from flytekitplugins.raympi import Launcher, RayMPIJob, Worker


@task(task_config=RayMPIJob(launcher=Launcher(replicas=1), worker=Worker(replicas=2), slots=2))
def estimate_pi(samples: int) -> (float, List[str]):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    points = np.random.default_rng(seed=comm.rank).uniform(size=(samples, 2))
    hits = comm.allreduce(int(((points**2).sum(axis=1) <= 1.0).sum()))
    ranks = comm.gather(f"rank {comm.rank} of {comm.size}: pid {os.getpid()} on {socket.gethostname()}", root=0)
    return 4.0 * hits / (samples * comm.size), ranks


@workflow
def pi_workflow(samples: int = 200_000) -> (float, List[str]):
    return estimate_pi(samples=samples)


if __name__ == "__main__":
    pi, ranks = pi_workflow()
    print("\n".join(ranks))
    print(f"pi ~= {pi:.5f} from {len(ranks)} MPI ranks")
