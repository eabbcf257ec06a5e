"""Where mpirun's daemons start on the other nodes of a world, in place of sshd: one `DaemonLauncher` actor per
node, placed in the world's placement group (gone with it), listening on its node's IP. raympi.launch_agent,
which mpirun runs in place of ssh, hands it the daemon's command line; it runs the command, reports the exit
status, and stops the daemon when the agent goes away. Only an agent holding the world's key is heard.
"""

import os
import signal
import subprocess
import sys
import threading
from typing import Tuple

import ray

from .channel import Channel, ChannelListener

# `python -c _GUARD <launcher pid> <command>`, the launcher's child, in a process group of its own: it dies with the
# launcher (prctl PR_SET_PDEATHSIG) and runs the command in a shell that dies with it, whose trap then kills the
# group. Two processes, as Ray SIGKILLs a killed actor's children, a shell that would trap it included. A preexec_fn
# here is safe: this process has one thread.
_GUARD = """import ctypes, os, signal, subprocess, sys
prctl = ctypes.CDLL(None).prctl
prctl(1, signal.SIGKILL)
os.getppid() == int(sys.argv[1]) or sys.exit(1)
guarded = "trap 'kill -KILL 0' TERM; { " + sys.argv[2] + "; } & wait $!"
sys.exit(subprocess.call(["/bin/sh", "-c", guarded], preexec_fn=lambda: prctl(1, signal.SIGTERM)))
"""


@ray.remote(num_cpus=0, max_restarts=0)
class DaemonLauncher:
    def __init__(self, key: bytes, host: str):
        """Listens on `host`, its node's IP as mpirun's --host names it."""
        self._listener = ChannelListener(host, key)
        threading.Thread(target=self._accept, name="raympi-launcher", daemon=True).start()

    def address(self) -> Tuple[str, int]:
        return self._listener.address

    def _accept(self) -> None:
        for connection, peer_ip in self._listener.accept():
            threading.Thread(target=self._serve, args=(connection, peer_ip), name="raympi-agent", daemon=True).start()

    def _serve(self, connection, peer_ip: str) -> None:
        """One agent: ("run", command) in, ("exit", status) out; the agent gone first stops the daemon."""
        agent = self._listener.authenticate(connection, peer_ip)
        if agent is None:
            return
        request = agent.receive()
        if request is not None and request[0] == "run":
            daemon = start_daemon(request[1])
            threading.Thread(target=_stop_when_gone, args=(agent, daemon), name="raympi-agent-watch",
                             daemon=True).start()
            status = daemon.wait()
            agent.send(("exit", status if status >= 0 else 128 - status))  # killed by a signal: as a shell says
        agent.close()


def start_daemon(command: str) -> subprocess.Popen:
    """Run mpirun's daemon command (a shell command line, as sshd would) so that it ends with this process (the
    actor killed, its node lost) or when its guard is sent SIGTERM: nothing runs on without Ray."""
    return subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), command], start_new_session=True)


def _stop_when_gone(agent: Channel, daemon: subprocess.Popen) -> None:
    """The agent says nothing after its request: its connection closing means it was stopped (or lost)."""
    agent.receive()
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)  # the guard dies, its shell's trap kills the daemon's whole group
