"""Rank 0's side of the world: it accepts every peer's channel, starts the peers, prints their
output, and learns first-hand when one of them fails or finishes (see raympi.world for what it shows of them)."""

import ipaddress
import os
import socket
import sys
import threading
from collections import Counter
from concurrent.futures import Future
from typing import Dict, List, Optional, Tuple

from .channel import Channel, ChannelListener
from .errors import MPIRankError, MPIWorldError
from .messages import Done, Exit, Failed, Go, Hello, Output, Report

PEER_CONNECT_TIMEOUT_S = 120.0
INTERRUPT_CHECK_S = 0.2
FINISHED = "finished"  # the state of a peer whose entry returned


class Tail:
    """The last `limit` characters of a text added to piece by piece."""

    def __init__(self, limit: int):
        self.limit, self.text = limit, ""

    def add(self, text: str) -> None:
        self.text = (self.text + text)[-self.limit:]


class Supervisor:
    def __init__(self, world_size: int, host: str, node_ip: str, key: bytes,
                 expected_hosts: Optional[Dict[str, int]] = None):
        """Listens on `host` (loopback when every rank is on this node, else `node_ip`, the node's IP
        that Ray reports) for peers that hold `key`. `expected_hosts`: ranks per node IP that Ray
        reserved; the started world must match it."""
        self.world_size = world_size
        self._node_ip, self._expected_hosts = node_ip, expected_hosts
        self._peers: Dict[int, Channel] = {}
        self._peer_ips: Dict[int, str] = {}
        self._peer_processes: Dict[int, Tuple[str, int]] = {}  # rank: (host, pid)
        self._ends: Dict[int, Tuple[str, dict]] = {}  # rank: (FINISHED or why it failed, its report), once it ended
        self._reports: Dict[int, dict] = {}  # rank: its report, as shared before it ended
        self._output: Optional[Dict[int, Tail]] = None  # rank: the end of its output, once kept
        self._output_limit = 0
        self._failure: Optional[MPIWorldError] = None
        self._peers_end_with_rank0 = False  # see start_peers
        self._closing = False
        self._changed = threading.Condition()
        self._listener = ChannelListener(host, key, self._serve)

    @property
    def address(self) -> Tuple[str, int]:
        """Where peers connect."""
        return self._listener.address

    @property
    def failure(self) -> Optional[MPIWorldError]:
        return self._failure

    def start_peers(self, env: Dict[str, str], ends_with_call: bool) -> None:
        """Wait until every peer is connected, then let them run their entry, those on rank 0's node with `env` set
        (rank 0's accelerators: a peer on another node sees those of its own node).

        `ends_with_call`: rank 0's worker exits after this call (a task's world), so a failure leaves the peers
        to close() rather than telling them to exit at once: a peer on another node that exits closes its TCP
        connections, and Open MPI aborts rank 0 for that ("Socket closed ... MPI_ERRORS_ARE_FATAL"), racing the
        failure rank 0 is returning to its caller. An actor's world has no such end: its peers are told at once."""
        with self._changed:
            self._peers_end_with_rank0 = ends_with_call
            self._changed.wait_for(
                lambda: len(self._peers) == self.world_size - 1 or self._failure, PEER_CONNECT_TIMEOUT_S
            )
            if len(self._peers) < self.world_size - 1 and not self._failure:
                self._fail(MPIWorldError(
                    f"only {len(self._peers)} of {self.world_size - 1} MPI peers reached rank 0 within "
                    f"{PEER_CONNECT_TIMEOUT_S:.0f} s"))
            self._check_placement()
            self._raise_if_failed()
            peers = [(peer, self._peer_ips[rank] == self._node_ip) for rank, peer in self._peers.items()]
        for peer, beside_rank0 in peers:
            peer.send(Go(env if beside_rank0 else {}))

    def wait(self, body: Future, for_peers: bool) -> None:
        """Block until `body` is done (and, with `for_peers`, every peer finished) or a rank fails."""
        def settled():
            return self._failure or (body.done() and (not for_peers or len(self._ends) == self.world_size - 1))

        body.add_done_callback(lambda _: self._notify())
        with self._changed:
            # In slices: Ray cancels a call by interrupting this (the main) thread, which an untimed wait never sees.
            while not self._changed.wait_for(settled, timeout=INTERRUPT_CHECK_S):
                pass
            self._raise_if_failed()

    def keep_output(self, limit: int) -> None:
        with self._changed:
            if self._output is None:
                self._output = {}
            self._output_limit = limit

    @property
    def keeps_output(self) -> bool:
        return self._output is not None

    def view(self, rank0: dict, wait_for_peers: bool, timeout: float) -> List[dict]:
        """See raympi.world.view; `rank0`: rank 0's report and output."""
        def ended():
            return not wait_for_peers or self._failure or len(self._ends) == self.world_size - 1

        with self._changed:
            self._changed.wait_for(ended, timeout)
            ranks = [{"rank": 0, "host": socket.gethostname(), "node_ip": self._node_ip, "pid": os.getpid(),
                      "state": None, **rank0}]
            for rank in sorted(self._peer_processes):
                state, report = self._ends.get(rank, (None, self._reports.get(rank, {})))
                ranks.append({"rank": rank, "host": self._peer_processes[rank][0], "node_ip": self._peer_ips[rank],
                              "pid": self._peer_processes[rank][1], "state": state, "report": report,
                              "output": self._output[rank].text if self._output and rank in self._output else ""})
            return ranks

    def fail(self, error: MPIWorldError) -> None:
        """Record rank 0's own failure and stop every peer (a task's world's peers: as rank 0 closes, see start_peers)."""
        with self._changed:
            self._fail(error)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            peers = list(self._peers.values())
        self._listener.close()
        for peer in peers:
            peer.close()

    def _check_placement(self) -> None:
        """Fail unless the ranks run on the reserved nodes, as many on each as reserved: never a
        "multi-node" world that silently runs on one node."""
        if not self._expected_hosts or self._failure:
            return
        actual = Counter(self._peer_ips.values())
        actual[self._node_ip] += 1
        if dict(actual) != self._expected_hosts:
            self._fail(MPIWorldError(
                f"the MPI world's ranks run on {dict(actual)} (node IP: ranks), but Ray reserved "
                f"{self._expected_hosts}: check the mpirun args (e.g. -n, --host, --map-by)"))

    def _raise_if_failed(self):
        if self._failure:
            raise self._failure

    def _fail(self, error: MPIWorldError) -> None:
        if self._failure is None:
            self._failure = error
            for peer in () if self._peers_end_with_rank0 else self._peers.values():
                try:
                    peer.send(Exit())
                except OSError:
                    pass
        self._changed.notify_all()

    def _serve(self, channel: Channel, peer_ip: str):
        hello = channel.receive()
        if not isinstance(hello, Hello):
            channel.close()
            return
        rank, host, pid = hello
        with self._changed:
            self._peers[rank] = channel
            self._peer_ips[rank] = self._node_ip if ipaddress.ip_address(peer_ip).is_loopback else peer_ip
            self._peer_processes[rank] = (host, pid)
            if self._failure and not self._peers_end_with_rank0:
                channel.send(Exit())
            self._changed.notify_all()
        streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        while (message := channel.receive()) is not None:
            match message:
                case Output(stream, text):
                    streams[stream].write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
                    streams[stream].flush()
                    if self._output is not None:
                        self._output.setdefault(rank, Tail(self._output_limit)).add(text + "\n")
                case Report(report):
                    self._reports[rank] = report
                case Failed(reason, trace, report):
                    with self._changed:
                        self._ends[rank] = (reason, report)
                        self._fail(MPIRankError(rank, host, pid, reason, trace))
                case Done(report):
                    with self._changed:
                        self._ends[rank] = (FINISHED, report)
                        self._changed.notify_all()
        with self._changed:
            if self._ends.get(rank, ("",))[0] != FINISHED and not self._closing:
                lost = MPIRankError(rank, host, pid, "exited before it finished (killed, or os._exit)")
                self._ends.setdefault(rank, (lost.reason, self._reports.get(rank, {})))
                self._fail(lost)
