"""What travels on raympi's channels (see raympi.channel), each message once: rank 0 and its peers (supervision),
a launch agent and a daemon launcher (daemon starts). Both ends import these; a message is a small named tuple."""

from typing import NamedTuple


# A peer to rank 0.
class Hello(NamedTuple):
    """First: who the peer is."""
    rank: int
    host: str
    pid: int


class Output(NamedTuple):
    """Lines the peer wrote to `stream` ("stdout" or "stderr")."""
    stream: str
    text: str


class Report(NamedTuple):
    """What the peer tells of itself (raympi.world.report()), before it ends."""
    report: dict


class Failed(NamedTuple):
    """The peer's entry raised: why, the traceback, its report."""
    reason: str
    trace: str
    report: dict


class Done(NamedTuple):
    """The peer's entry returned."""
    report: dict


# Rank 0 to a peer.
class Go(NamedTuple):
    """Every peer has joined: run the entry with `env` set."""
    env: dict


class Exit(NamedTuple):
    """A rank failed: end now."""


# A launch agent to a daemon launcher, and back.
class Run(NamedTuple):
    """Start mpirun's daemon: its command line, as mpirun handed it to the agent."""
    command: str


class Ended(NamedTuple):
    """The daemon's exit status and the end of its stderr."""
    status: int
    stderr: str
