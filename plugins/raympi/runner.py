"""The process entry of every rank under mpirun (`python -m raympi.runner <worker_entry> <ray worker argv>`).

Rank 0 becomes the Ray worker; ranks 1..N-1 become its peers and run `worker_entry`.
"""

import sys


def main(argv) -> None:
    worker_entry, ray_worker_argv = argv[0], argv[1:]
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        from . import rank0
        from .supervisor import Supervisor

        supervisor = Supervisor(comm.size)
        comm.bcast((_node_ip(ray_worker_argv), supervisor.port))
        rank0.run_ray_worker(supervisor, ray_worker_argv)
    else:
        from . import peer

        peer.run(comm.rank, comm.bcast(None), worker_entry)


def _node_ip(ray_worker_argv) -> str:
    for arg in ray_worker_argv:
        if arg.startswith("--node-ip-address="):
            return arg.split("=", 1)[1]
    return "127.0.0.1"


if __name__ == "__main__":
    main(sys.argv[1:])
