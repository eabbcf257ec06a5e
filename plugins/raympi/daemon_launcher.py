"""Where mpirun's daemons start on the other nodes of a world, in place of sshd: one `DaemonLauncher` actor per
node, placed in the world's placement group (gone with it), listening on its node's IP. raympi.launch_agent,
which mpirun runs in place of ssh, hands it the daemon's command line; it runs the command, reports the exit
status and the end of the daemon's stderr (where a daemon that failed says why), and stops the daemon when the
agent goes away. Only an agent holding the world's key is heard. A daemon that fails while its agent waits is
also told to the world's caller by `failure` (see raympi.spread.get): Ray, waiting for a rank 0
that never comes, would not say it.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
from typing import Dict, Tuple

import ray

from .channel import Channel, ChannelListener

# How much of a daemon's stderr (the last bytes) goes back to the agent with its exit status.
STDERR_TAIL_BYTES = 4096
# How often `failure` looks: its callers are the drivers of worlds, which wait seconds at least.
FAILURE_POLL_S = 0.2

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
        self._host = host
        self._runs = 0  # daemons started so far
        self._failures: Dict[int, str] = {}  # the number of a daemon (in order of start): why it failed
        self._listener = ChannelListener(host, key)
        threading.Thread(target=self._accept, name="raympi-launcher", daemon=True).start()

    def address(self) -> Tuple[str, int]:
        return self._listener.address

    async def failure(self) -> str:
        """Returns once a daemon started here after this call has failed while its agent waited for it: where, its
        exit status and the end of its stderr. (Earlier daemons were other worlds', of the same placement.)"""
        first = self._runs
        while not (failed := [number for number in self._failures if number >= first]):
            await asyncio.sleep(FAILURE_POLL_S)
        return self._failures[min(failed)]

    def _accept(self) -> None:
        for connection, peer_ip in self._listener.accept():
            threading.Thread(target=self._serve, args=(connection, peer_ip), name="raympi-agent", daemon=True).start()

    def _serve(self, connection, peer_ip: str) -> None:
        """One agent: ("run", command) in, ("exit", status, stderr tail) out; the agent gone first stops the daemon."""
        agent = self._listener.authenticate(connection, peer_ip)
        if agent is None:
            return
        request = agent.receive()
        if request is not None and request[0] == "run":
            number, self._runs = self._runs, self._runs + 1
            daemon = start_daemon(request[1])
            gone = threading.Event()
            threading.Thread(target=_stop_when_gone, args=(agent, daemon, gone), name="raympi-agent-watch",
                             daemon=True).start()
            tail = _StderrTail(daemon)
            status = daemon.wait()
            status = status if status >= 0 else 128 - status  # killed by a signal: as a shell says
            said = tail.text()
            if status and not gone.is_set():
                self._failures[number] = f"mpirun's daemon on {self._host} failed (exit status {status}): " + said.strip()
            agent.send(("exit", status, said))
        agent.close()


def start_daemon(command: str) -> subprocess.Popen:
    """Run mpirun's daemon command (a shell command line, as sshd would) so that it ends with this process (the
    actor killed, its node lost) or when its guard is sent SIGTERM: nothing runs on without Ray."""
    return subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), command], start_new_session=True,
                            stderr=subprocess.PIPE)


class _StderrTail:
    """Copies a daemon's stderr to this actor's (Ray's log of it) and keeps its last STDERR_TAIL_BYTES."""

    def __init__(self, daemon: subprocess.Popen):
        self._tail = b""
        self._thread = threading.Thread(target=self._copy, args=(daemon.stderr,), name="raympi-daemon-stderr",
                                        daemon=True)
        self._thread.start()

    def _copy(self, stderr) -> None:
        with stderr:
            for chunk in iter(lambda: stderr.read1(STDERR_TAIL_BYTES), b""):
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
                self._tail = (self._tail + chunk)[-STDERR_TAIL_BYTES:]

    def text(self) -> str:
        """What the daemon wrote up to its end (a process it left holding its stderr is not waited for long)."""
        self._thread.join(timeout=2)
        return self._tail.decode(errors="replace")


def _stop_when_gone(agent: Channel, daemon: subprocess.Popen, gone: threading.Event) -> None:
    """The agent says nothing after its request: its connection closing means it was stopped (or lost)."""
    agent.receive()
    gone.set()
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)  # the guard dies, its shell's trap kills the daemon's whole group
