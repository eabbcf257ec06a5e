"""The MPI launcher's agent for other Ray nodes, in place of ssh:

    RAYMPI_LAUNCHERS='{"<node ip>": <port>, ...}' RAYMPI_WORLD=<world id> \
        python -m raympi.launch_agent <node ip> <command...>     (or: raympi-launch-agent <node ip> <command...>)

mpirun (PRRTE) or Hydra calls it as it would call ssh, once per other node and all at once, to start its daemon
(Hydra: proxy) there.
It hands the command to that node's raympi.daemon_launcher (the world's key, from raympi.world_key on this node,
proves who asks), exits with the
daemon's status, and stops the daemon by exiting. Why a daemon failed (the end of its stderr), or why its
launcher cannot be reached, is said on stderr: Ray shows it on the driver's console. It imports no Ray: one runs
per node of the world on rank 0's node, and costs a small Python process.
"""

import json
import os
import signal
import sys
from typing import Tuple

from . import world_key
from .channel import CONNECT_ERRORS, Channel
from .messages import Ended, Run

LAUNCHERS_VAR = "RAYMPI_LAUNCHERS"
WORLD_VAR = "RAYMPI_WORLD"
# ssh's status when the connection is lost: what mpirun reports as a daemon that failed to start or died.
LOST = 255


def main(argv) -> int:
    host, command = argv[0], " ".join(argv[1:])
    status, why = _launch(host, command)
    if status:
        print(f"raympi.launch_agent: mpirun's daemon on {host} failed (exit status {status}): "
              f"{why.strip() or 'it said nothing'}",
              file=sys.stderr)
    return status


def _launch(host: str, command: str) -> Tuple[int, str]:
    """The daemon's exit status and the end of its stderr."""
    port = json.loads(os.environ[LAUNCHERS_VAR]).get(host)
    if port is None:
        return LOST, f"{LAUNCHERS_VAR} has no daemon launcher for {host}"
    try:
        launcher = Channel.connect((host, port), world_key.fetch(os.environ[WORLD_VAR]))
    except CONNECT_ERRORS as error:
        return LOST, f"the daemon launcher at {host}:{port} does not answer: {error}"
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: sys.exit(128 + signum))  # closing the channel stops the daemon
    launcher.send(Run(command))
    reply = launcher.receive()
    if not isinstance(reply, Ended):
        return LOST, f"lost the daemon launcher at {host}:{port}"
    return reply


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
