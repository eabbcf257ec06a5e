"""Rank 0's side of the world: it accepts every peer's channel, starts the peers, prints their
output, and learns first-hand when one of them fails or finishes."""

import socket
import sys
import threading
from typing import Dict, Optional

from .channel import Channel
from .errors import MPIRankError, MPIWorldError

PEER_CONNECT_TIMEOUT_S = 120.0


class Supervisor:
    def __init__(self, world_size: int, bind_host: str = "0.0.0.0"):
        self.world_size = world_size
        self._listener = socket.create_server((bind_host, 0))
        self._peers: Dict[int, Channel] = {}
        self._finished = set()
        self._failure: Optional[MPIWorldError] = None
        self._closing = False
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, name="raympi-accept", daemon=True).start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def failure(self) -> Optional[MPIWorldError]:
        return self._failure

    def start_peers(self, env: Dict[str, str]) -> None:
        """Wait until every peer is connected, then let them run their entry with `env` set."""
        with self._changed:
            self._changed.wait_for(
                lambda: len(self._peers) == self.world_size - 1 or self._failure, PEER_CONNECT_TIMEOUT_S
            )
            if len(self._peers) < self.world_size - 1 and not self._failure:
                self._fail(MPIWorldError(
                    f"only {len(self._peers)} of {self.world_size - 1} MPI peers reached rank 0 within "
                    f"{PEER_CONNECT_TIMEOUT_S:.0f} s"))
            self._raise_if_failed()
            peers = list(self._peers.values())
        for peer in peers:
            peer.send(("go", env))

    def wait(self, done: threading.Event, for_peers: bool) -> None:
        """Block until `done` is set (and, with `for_peers`, every peer finished) or a rank fails."""
        def settled():
            return self._failure or (done.is_set() and (not for_peers or len(self._finished) == self.world_size - 1))

        with self._changed:
            while not settled():
                self._changed.wait(0.1)
            self._raise_if_failed()

    def fail(self, error: MPIWorldError) -> None:
        """Record rank 0's own failure and stop every peer."""
        with self._changed:
            self._fail(error)

    def close(self) -> None:
        with self._changed:
            self._closing = True
            peers = list(self._peers.values())
        self._listener.close()
        for peer in peers:
            peer.close()

    def _raise_if_failed(self):
        if self._failure:
            raise self._failure

    def _fail(self, error: MPIWorldError) -> None:
        if self._failure is None:
            self._failure = error
            for peer in self._peers.values():
                try:
                    peer.send(("exit",))
                except OSError:
                    pass
        self._changed.notify_all()

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(Channel(sock),), name="raympi-peer", daemon=True).start()

    def _serve(self, channel: Channel):
        hello = channel.receive()
        if hello is None:
            return
        _, rank, host, pid = hello
        with self._changed:
            self._peers[rank] = channel
            if self._failure:
                channel.send(("exit",))
            self._changed.notify_all()
        streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        while (message := channel.receive()) is not None:
            kind = message[0]
            if kind == "output":
                stream = streams[message[1]]
                stream.write("".join(f"[rank {rank}] {line}\n" for line in message[2].splitlines()))
                stream.flush()
            elif kind == "failed":
                with self._changed:
                    self._fail(MPIRankError(rank, host, pid, message[1], message[2]))
            elif kind == "done":
                with self._changed:
                    self._finished.add(rank)
                    self._changed.notify_all()
        with self._changed:
            if rank not in self._finished and not self._closing:
                self._fail(MPIRankError(rank, host, pid, "exited before it finished (killed, or os._exit)"))
