"""What rank 0's code can see of its MPI world, for a report such as a Flyte Deck: each rank's host, node IP, pid,
state, what the rank told of itself (`REPORT`: wall-clock `mark`s and facts its code adds) and, once asked for
(`keep_output`), the end of its output (rank 0's: what its Python code prints). A peer sends its REPORT to rank 0
with its end (done or failed), on the messages it sends anyway, and before only when its code says so (`share`).

Times are each host's wall clock (time.time(), as NTP keeps it): that is how marks of different hosts line up.
"""

import sys
import time
from typing import Dict, List, Optional

from .messages import Report

# What this rank tells rank 0 of itself: {"marks": {name: wall-clock time}, name: fact, ...}; small and picklable.
REPORT: Dict[str, object] = {}


def mark(name: str, at: Optional[float] = None) -> None:
    """This rank reached `name` now (or at the wall-clock time `at`)."""
    REPORT.setdefault("marks", {})[name] = time.time() if at is None else at


def share() -> None:
    """On a peer: send REPORT to rank 0 now, so that `view` has it should this rank never end by itself."""
    if to_rank0 is not None:
        to_rank0.send(Report(REPORT))


def keep_output(limit: int) -> None:
    """On rank 0: from now on keep the last `limit` characters of each rank's output, for `view`."""
    global _rank0_output
    _supervisor().keep_output(limit)
    if _rank0_output is None:
        _rank0_output = Tail(limit)
        sys.stdout, sys.stderr = _Tee(sys.stdout, _rank0_output), _Tee(sys.stderr, _rank0_output)


def view(wait_for_peers: bool = False, timeout: float = 30.0) -> List[dict]:
    """On rank 0: one dict per rank, by rank: rank, host, node_ip, pid, state (None while it runs, "finished", or
    why it failed), report (its REPORT) and output (kept since `keep_output`). With `wait_for_peers`, once every
    peer has ended or the world has failed (at most `timeout` seconds)."""
    rank0 = {"report": dict(REPORT), "output": _rank0_output.text if _rank0_output else ""}
    return _supervisor().view(rank0, wait_for_peers, timeout)


class Tail:
    """The last `limit` characters of a text added to piece by piece."""

    def __init__(self, limit: int):
        self.limit, self.text = limit, ""

    def add(self, text: str) -> None:
        self.text = (self.text + text)[-self.limit:]


class _Tee:
    """A text stream that also keeps what is written to it."""

    def __init__(self, stream, kept: Tail):
        self._stream, self._kept = stream, kept

    def write(self, text: str) -> int:
        self._kept.add(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


_rank0_output: Optional[Tail] = None
to_rank0 = None  # on a peer, its channel to rank 0 (set by raympi.peer)


def _supervisor():
    from . import rank0

    if rank0.SUPERVISOR is None:
        raise RuntimeError("raympi.world.view and keep_output work on rank 0 of an MPI world only")
    return rank0.SUPERVISOR
