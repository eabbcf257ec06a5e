"""The process entry of every rank under mpirun:

    python -m raympi.runner [--hosts=ip:slots,...] <worker_entry> <ray worker argv>

Rank 0 becomes the Ray worker; ranks 1..N-1 become its peers and run `worker_entry`. With --hosts,
rank 0 checks that the world's ranks run where they were reserved.
"""

import sys
from typing import Dict


def main(argv) -> None:
    expected = _parse_hosts(argv.pop(0)) if argv[0].startswith("--hosts=") else None
    worker_entry, ray_worker_argv = argv[0], argv[1:]
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    # mpi4py's first reduction of Python objects on a communicator duplicates it while holding the GIL, until
    # every rank has joined. In rank 0's body, a peer that failed first would freeze rank 0's supervision.
    comm.allreduce(0)
    if comm.rank == 0:
        from . import rank0
        from .supervisor import Supervisor

        node_ip = _node_ip(ray_worker_argv)
        supervisor = Supervisor(comm.size, node_ip, expected)
        comm.bcast((node_ip, supervisor.port))
        rank0.run_ray_worker(supervisor, ray_worker_argv)
    else:
        from . import peer

        peer.run(comm.rank, comm.bcast(None), worker_entry)


def _parse_hosts(option: str) -> Dict[str, int]:
    """"--hosts=a:2,b:2" -> {"a": 2, "b": 2}"""
    pairs = (host.rsplit(":", 1) for host in option.split("=", 1)[1].split(","))
    return {ip: int(slots) for ip, slots in pairs}


def _node_ip(ray_worker_argv) -> str:
    for arg in ray_worker_argv:
        if arg.startswith("--node-ip-address="):
            return arg.split("=", 1)[1]
    return "127.0.0.1"


if __name__ == "__main__":
    main(sys.argv[1:])
