"""This process as a rank of an MPI world, and what rank 0's code can see of that world, for a report such as a
Flyte Deck: each rank's host, node IP, pid, state, what the rank told of itself (wall-clock `mark`s and facts its
code adds with `tell`) and, once asked for (`keep_output`), the end of its output (rank 0's: what its Python code
prints). A peer sends its report to rank 0 with its end (done or failed), on the messages it sends anyway, and
before only when its code says so (`share`).

A process joins its world once (`join`; rank 0 by raympi.runner, a peer by raympi.peer): rank 0 with its supervisor, a peer with its channel to
rank 0. Times are each host's wall clock (time.time(), as NTP keeps it): that is how marks of different hosts line up.
"""

import sys
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from .messages import Report
from .supervisor import Supervisor, Tail

if TYPE_CHECKING:
    from .channel import Channel


class _Member:
    """This process's place in its world: its report ({"marks": {name: wall-clock time}, name: fact, ...}; small
    and picklable) and its link to the world (rank 0: the supervisor of its peers; a peer: its channel to rank 0)."""

    def __init__(self, link: Union[Supervisor, "Channel"], rank: int):
        self.link, self.rank = link, rank
        self.report: Dict[str, object] = {}
        self.output: Optional[Tail] = None  # rank 0's, once kept


_member: Optional[_Member] = None


def join(rank: int, link: Union[Supervisor, "Channel"]) -> None:
    """Make this process rank `rank` of a world: rank 0 with its supervisor, a peer with its channel to rank 0."""
    global _member
    _member = _Member(link, rank)


def joined() -> bool:
    """Whether this process is a rank of an MPI world started by the `mpi` runtime env."""
    return _member is not None


def mark(name: str, at: Optional[float] = None) -> None:
    """This rank reached `name` now (or at the wall-clock time `at`)."""
    _this().report.setdefault("marks", {})[name] = time.time() if at is None else at


def tell(name: str, fact) -> None:
    """A fact of this rank for the report (small and picklable)."""
    _this().report[name] = fact


def report() -> Dict[str, object]:
    """What this rank told of itself."""
    return dict(_this().report)


def share() -> None:
    """On a peer: send its report to rank 0 now, so that `view` has it should this rank never end by itself."""
    member = _this()
    if member.rank:
        member.link.send(Report(report()))


def keep_output(limit: int) -> None:
    """On rank 0: from now on keep the last `limit` characters of each rank's output, for `view`."""
    member = _rank0()
    member.link.keep_output(limit)
    if member.output is None:
        member.output = Tail(limit)
        sys.stdout, sys.stderr = _Tee(sys.stdout, member.output), _Tee(sys.stderr, member.output)


def view(wait_for_peers: bool = False, timeout: float = 30.0) -> List[dict]:
    """On rank 0: one dict per rank, by rank: rank, host, node_ip, pid, state (None while it runs, "finished", or
    why it failed), report and output (kept since `keep_output`). With `wait_for_peers`, once every peer has ended
    or the world has failed (at most `timeout` seconds)."""
    member = _rank0()
    rank0 = {"report": report(), "output": member.output.text if member.output else ""}
    return member.link.view(rank0, wait_for_peers, timeout)


class _Tee:
    """A text stream that also keeps what is written to it."""

    def __init__(self, stream, kept: Tail):
        self._stream, self._kept = stream, kept

    def write(self, text: str) -> int:
        self._kept.add(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _this() -> _Member:
    if _member is None:
        raise RuntimeError("raympi.world works in a rank of an MPI world started by the `mpi` runtime env only")
    return _member


def _rank0() -> _Member:
    member = _this()
    if member.rank:
        raise RuntimeError("raympi.world.view and keep_output work on rank 0 of an MPI world only")
    return member
