"""Open MPI's launch agent for other Ray nodes, in place of ssh:

    RAYMPI_RAY_ADDRESS=<gcs address> python -m raympi.launch_agent <node ip> <command...>

mpirun (PRRTE) calls it as it would call ssh, to start its daemon on another node. The daemon runs
there as a Ray task pinned to that node, in rank 0's runtime env (so its ranks find the same code and
packages); the agent exits with the daemon's status, and stops it when mpirun stops the agent. The
daemon and its ranks end with that task: cancelled, its node lost, or its owner (this agent) gone.
"""

import json
import logging
import os
import signal
import subprocess
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raympi.command import DAEMON_RUNTIME_ENV, RANK_ENV, RAY_ADDRESS_VAR
from raympi.ray_internals import node_addresses

# `python -c _DIE_WITH_PARENT <parent pid> <argv...>`: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), then
# become argv. Set in the child itself: a preexec_fn may deadlock in a process with threads, as a Ray worker is.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
                    "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execv(sys.argv[2], sys.argv[2:])")


@ray.remote(num_cpus=0, max_retries=0)
def run_daemon(command: str) -> int:
    """Run mpirun's daemon command (a shell command line, as ssh would) on this node. Its process
    group ends with this worker (the task cancelled, the node lost): nothing runs on without Ray."""
    guarded = f"trap 'kill -KILL 0' TERM; {{ {command}; }} & wait $!"
    die_with_worker = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
    return subprocess.run([*die_with_worker, "/bin/sh", "-c", guarded], start_new_session=True).returncode


def node_id(ip: str) -> str:
    for node, address in node_addresses(alive_only=True).items():
        if address == ip:
            return node
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
