"""Open MPI's launch agent for other Ray nodes, in place of ssh:

    python -m raympi.launch_agent --ray-address=<gcs> <node ip> <command...>

mpirun (PRRTE) calls it as it would call ssh, to start its daemon on another node. The daemon runs
there as a Ray task pinned to that node; the agent exits with the daemon's status, and stops it when
mpirun stops the agent. Ray kills the task if the agent dies.
"""

import logging
import signal
import subprocess
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0, max_retries=0)
def run_daemon(command: str) -> int:
    """Run mpirun's daemon command (a shell command line, as ssh would) on this node."""
    return subprocess.run(["/bin/sh", "-c", command]).returncode


def node_id(ip: str) -> str:
    for node in ray.nodes():
        if node["Alive"] and node["NodeManagerAddress"] == ip:
            return node["NodeID"]
    raise LookupError(f"no live Ray node has the address {ip}")


def main(argv) -> int:
    address, host, command = argv[0].split("=", 1)[1], argv[1], " ".join(argv[2:])
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    daemon = run_daemon.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id(host), soft=False),
        name=f"MPI daemon on {host}",
    ).remote(command)

    def stop(signum, _frame):
        ray.cancel(daemon, force=True)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    return ray.get(daemon)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
