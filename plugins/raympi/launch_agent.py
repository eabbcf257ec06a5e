"""Open MPI's launch agent for other Ray nodes, in place of ssh:

    RAYMPI_RAY_ADDRESS=<gcs address> python -m raympi.launch_agent <node ip> <command...>

mpirun (PRRTE) calls it as it would call ssh, to start its daemon on another node. The daemon runs
there as a Ray task pinned to that node, in rank 0's runtime env (so its ranks find the same code and
packages); the agent exits with the daemon's status, and stops it when mpirun stops the agent. The
daemon and its ranks end with that task: cancelled, its node lost, or its owner (this agent) gone.
"""

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raympi.command import DAEMON_RUNTIME_ENV, RANK_ENV, RAY_ADDRESS_VAR

_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@ray.remote(num_cpus=0, max_retries=0)
def run_daemon(command: str) -> int:
    """Run mpirun's daemon command (a shell command line, as ssh would) on this node. Its process
    group ends with this worker (the task cancelled, the node lost): nothing runs on without Ray."""
    guarded = f"trap 'kill -KILL 0' TERM; {{ {command}; }} & wait $!"
    return subprocess.run(["/bin/sh", "-c", guarded], start_new_session=True,
                          preexec_fn=_terminate_with_parent).returncode


def node_id(ip: str) -> str:
    for node in ray.nodes():
        if node["Alive"] and node["NodeManagerAddress"] == ip:
            return node["NodeID"]
    raise LookupError(f"no live Ray node has the address {ip}")


def main(argv) -> int:
    host, command = argv[0], " ".join(argv[1:])
    ray.init(address=os.environ[RAY_ADDRESS_VAR], logging_level=logging.WARNING)
    runtime_env = json.loads(os.environ.get(DAEMON_RUNTIME_ENV) or "{}")
    # The daemon's ranks inherit its worker's niceness and threads: make them those of rank 0's node.
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **{name: os.environ[name] for name in RANK_ENV}}
    daemon = run_daemon.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id(host), soft=False),
        name=f"MPI daemon on {host}",
        runtime_env=runtime_env,
    ).remote(command)

    def stop(signum, _frame):
        ray.cancel(daemon, force=True)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    return ray.get(daemon)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
