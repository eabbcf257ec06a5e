"""The process entry of every rank under mpirun:

    python -m raympi.runner <flavour> [--hosts=ip:slots,...] <worker_entry> <ray worker argv>

Rank 0 becomes the Ray worker; ranks 1..N-1 become its peers and run `worker_entry`. With --hosts,
rank 0 checks that the world's ranks run where they were reserved. A rank whose mpi4py loads another MPI than
the `flavour` (see raympi.flavours) that started it exits at once, saying so: it would be a world of its own.
"""

import os
import socket
import sys
from typing import Dict

from .flavours import FLAVOURS, library_version
from .launcher_dir import LauncherGone
from .ray_internals import NODE_IP_ARG, worker_node_ip


def main(argv) -> None:
    flavour = FLAVOURS[argv.pop(0)]
    expected = _parse_hosts(argv.pop(0)) if argv[0].startswith("--hosts=") else None
    worker_entry, ray_worker_argv = argv[0], argv[1:]
    mismatch = flavour.mismatch(library_version())
    if mismatch:
        sys.exit(f"raympi.runner: {mismatch}")
    from mpi4py import MPI

    try:
        flavour.before_init()
    except LauncherGone as gone:  # nothing to run in, nothing to leave behind
        sys.exit(f"raympi.runner: {gone}")
    MPI.Init_thread()
    comm = MPI.COMM_WORLD
    # Which loopback each rank reaches. Also a warm-up: mpi4py's first reduction of Python objects on a
    # communicator duplicates it while holding the GIL, until every rank has joined. In rank 0's body, a
    # peer that failed first would freeze rank 0's supervision.
    networks = comm.allreduce([_network()])
    flavour.release_shared_memory()
    if comm.rank == 0:
        from . import abort, rank0, world
        from .channel import new_key
        from .supervisor import Supervisor

        node_ip, key = _node_ip(ray_worker_argv), new_key()
        host = "127.0.0.1" if len(set(networks)) == 1 else node_ip
        supervisor = Supervisor(comm.size, host, node_ip, key, expected)
        # MPI carries the key: the channel trusts only who got it from this broadcast.
        comm.bcast((supervisor.address, key))
        world.join(0, supervisor)
        abort.catch(rank0.abort_handle(supervisor))
        rank0.run_ray_worker(supervisor, ray_worker_argv)
    else:
        from . import peer

        peer.run(comm.rank, *comm.bcast(None), worker_entry)


def _parse_hosts(option: str) -> Dict[str, int]:
    """"--hosts=a:2,b:2" -> {"a": 2, "b": 2}"""
    pairs = (host.rsplit(":", 1) for host in option.split("=", 1)[1].split(","))
    return {ip: int(slots) for ip, slots in pairs}


def _node_ip(ray_worker_argv) -> str:
    """The node's IP as Ray reports it to its worker (what mpirun's --host names)."""
    node_ip = worker_node_ip(ray_worker_argv)
    if node_ip is None:
        raise RuntimeError(f"rank 0 was started without Ray's {NODE_IP_ARG} worker argument: {ray_worker_argv}")
    return node_ip


def _network() -> str:
    """The network namespace this process is in (its loopback), unique on the machine and across machines."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return f"{boot.read().strip()}/{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:  # not Linux: a host name
        return socket.gethostname()


if __name__ == "__main__":
    main(sys.argv[1:])
