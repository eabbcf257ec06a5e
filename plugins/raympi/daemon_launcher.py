"""Where mpirun's daemons start on the other nodes of a world, in place of sshd: one `DaemonLauncher` actor per
node, placed in the world's placement group (gone with it), listening on its node's IP. raympi.launch_agent,
which mpirun runs in place of ssh, hands it the daemon's command line; it runs the command, reports the exit
status and the end of the daemon's stderr (where a daemon that failed says why), and stops the daemon when the
agent goes away. Only an agent holding the world's key is heard, and only a daemon of an MPI flavour is run (see
`daemon_command`). A daemon that fails while its agent waits is
also told to the world's caller by `failure` (see raympi.spread.get): Ray, waiting for a rank 0
that never comes, would not say it.
"""

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Tuple

import ray

from .channel import Channel, ChannelListener
from .flavours import FLAVOURS
from .messages import Ended, Run

# How much of a daemon's stderr (the last bytes) goes back to the agent with its exit status.
STDERR_TAIL_BYTES = 4096
# How often `failure` looks: its callers are the drivers of worlds, which wait seconds at least.
FAILURE_POLL_S = 0.2

# What an agent may have run: the daemon of an MPI flavour, by its program's name.
DAEMONS = {flavour.daemon for flavour in FLAVOURS.values()}
# The status an agent gets for a command that is not such a daemon's.
REFUSED = 126

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
    def __init__(self, host: str):
        """Will listen on `host`, its node's IP as mpirun's --host names it."""
        self._host = host
        self._runs = 0  # daemons started so far
        self._settled = 0  # those before it are of calls that ended
        self._failures: Dict[int, str] = {}  # the number of a daemon (in order of start): why it failed

    def listen(self, key: bytes) -> Tuple[str, int]:
        """Hear agents that hold `key` (given in a call: Ray logs no call's arguments); where they connect."""
        self._listener = ChannelListener(self._host, key, self._serve)
        return self._listener.address

    async def failure(self) -> str:
        """Returns once a daemon started here since the last `settle` has failed while its agent waited: where, its
        exit status and the end of its stderr."""
        while not (failed := [number for number in self._failures if number >= self._settled]):
            await asyncio.sleep(FAILURE_POLL_S)
        return self._failures[min(failed)]

    def settle(self) -> None:
        """The daemons started so far are of calls that ended (see raympi.spread.get): `failure` tells of later ones."""
        self._settled = self._runs

    def _serve(self, agent: Channel, peer_ip: str) -> None:
        """One agent: Run in, Ended out; the agent gone first stops the daemon."""
        request = agent.receive()
        if isinstance(request, Run):
            agent.send(self._run(agent, request.command))
        agent.close()

    def _run(self, agent: Channel, command: str) -> Ended:
        try:
            env, argv = daemon_command(command)
        except ValueError as refused:
            return Ended(REFUSED, f"the daemon launcher on {self._host} refused to run it: {refused}")
        number, self._runs = self._runs, self._runs + 1
        daemon = start_daemon(argv, env)
        gone = threading.Event()
        threading.Thread(target=_stop_when_gone, args=(agent, daemon, gone), name="raympi-agent-watch",
                         daemon=True).start()
        tail = _StderrTail(daemon)
        status = daemon.wait()
        status = status if status >= 0 else 128 - status  # killed by a signal: as a shell says
        said = tail.text()
        if status and not gone.is_set():
            self._failures[number] = f"mpirun's daemon on {self._host} failed (exit status {status}): " + said.strip()
        return Ended(status, said)


def daemon_command(command: str) -> Tuple[Dict[str, str], List[str]]:
    """The environment and argv of mpirun's daemon command, as its launcher writes it for ssh: `<daemon> <args>`,
    after `NAME=value;export NAME;` statements (PRRTE's), all in PRRTE's wrapper for a user whose shell is sh or ksh.
    ValueError unless that is all it is, and the daemon one of DAEMONS."""
    command = command.strip()
    if command.startswith(_SH_PROFILE) and command.endswith(")"):
        command = command[len(_SH_PROFILE):-1]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    statements, words = [], []
    for token in lexer:
        if token == ";":
            statements.append(words)
            words = []
        else:
            words.append(token)
    *settings, argv = [*statements, words] if words else statements
    env = dict(os.environ)
    for setting in settings:
        if len(setting) == 1 and _ASSIGNMENT.fullmatch(setting[0]):
            name, value = setting[0].split("=", 1)
            env[name] = _VARIABLE.sub(lambda used: env.get(used.group(1), ""), value)
        elif not (len(setting) == 2 and setting[0] == "export" and setting[1] in env):
            raise ValueError(f"{shlex.join(setting)!r} is neither NAME=value nor export NAME")
    if not argv or os.path.basename(argv[0]) not in DAEMONS:
        raise ValueError(f"{argv[0] if argv else 'nothing'} is not an MPI daemon ({', '.join(sorted(DAEMONS))})")
    return env, argv


# PRRTE's ssh launcher wraps the command so for a user whose shell (passwd's, else $SHELL) is sh or ksh, to source
# ~/.profile as a non-interactive sh would not (plm_ssh_module.c, setup_shell). The daemon launcher runs the daemon in
# its own environment, the Ray worker's: there is nothing to source.
_SH_PROFILE = "( test ! -r ./.profile || . ./.profile;"
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*", re.DOTALL)
_VARIABLE = re.compile(r"\$([A-Za-z_]\w*)")


def start_daemon(argv: List[str], env: Dict[str, str]) -> subprocess.Popen:
    """Run mpirun's daemon so that it ends with this process (the actor killed, its node lost) or when its guard is
    sent SIGTERM: nothing runs on without Ray."""
    return subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), shlex.join(argv)], env=env,
                            start_new_session=True, stderr=subprocess.PIPE)


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
