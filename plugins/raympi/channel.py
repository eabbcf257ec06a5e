"""How rank 0 and its peers talk outside MPI: `multiprocessing.connection` over TCP, authenticated both
ways with a per-world key (HMAC challenge-response) before any message is unpickled.

MPI calls block in C and cannot be interrupted, so supervision (go, output, failure, done) and liveness
(a closed connection means a dead rank) travel on this channel instead. The key reaches the peers in
MPI's own broadcast of rank 0's address, never over this channel.
"""

import logging
import secrets
import socket
import struct
import threading
from multiprocessing.connection import AuthenticationError, Connection, Listener, answer_challenge, deliver_challenge
from typing import Iterator, Optional, Tuple

logger = logging.getLogger(__name__)

# How long a new connection may take to authenticate; one that says nothing is dropped then.
HANDSHAKE_TIMEOUT_S = 10.0
# What Channel.connect raises when no channel comes of it: unreachable, silent, closed, or a wrong key.
CONNECT_ERRORS = (OSError, EOFError, AuthenticationError)


def new_key() -> bytes:
    """A world's secret: 256 random bits."""
    return secrets.token_bytes(32)


class Channel:
    """One end of an authenticated connection that sends and receives whole Python objects."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._send_lock = threading.Lock()

    @classmethod
    def connect(cls, address: Tuple[str, int], key: bytes) -> "Channel":
        """The channel to a listener at `address` holding `key`; raises one of CONNECT_ERRORS, the connection and
        the handshake each after HANDSHAKE_TIMEOUT_S at most."""
        sock = socket.create_connection(address, timeout=HANDSHAKE_TIMEOUT_S)
        sock.settimeout(None)
        connection = Connection(sock.detach())
        try:
            _set_receive_timeout(connection, HANDSHAKE_TIMEOUT_S)
            answer_challenge(connection, key)
            deliver_challenge(connection, key)
            _set_receive_timeout(connection, 0)
        except BaseException:
            connection.close()
            raise
        return cls(connection)

    def send(self, message) -> None:
        with self._send_lock:
            self._connection.send(message)

    def receive(self):
        """The next message, or None once the other end has closed."""
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            return None

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked in receive() on this connection, close() would not.
        try:
            with _socket_of(self._connection) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._connection.close()


class ChannelListener:
    """Accepts channels on `host` (never the wildcard address), each authenticated on a thread of its own:
    a stranger, silent or not, holds up neither the peers nor the accepting thread."""

    def __init__(self, host: str, key: bytes, backlog: int = 128):
        self._listener = Listener((host, 0), family="AF_INET", backlog=backlog)  # no authkey: see accept()
        self._key = key

    @property
    def address(self) -> Tuple[str, int]:
        return self._listener.address

    def accept(self) -> Iterator[Tuple[Connection, str]]:
        """New connections and their peer IP, not yet authenticated (see `authenticate`), until closed."""
        while True:
            try:
                connection = self._listener.accept()
            except OSError:
                return
            yield connection, self._listener.last_accepted[0]

    def authenticate(self, connection: Connection, peer_ip: str) -> Optional[Channel]:
        """The channel, once the peer proved it has the key and rank 0 proved it too; else None (closed)."""
        try:
            _set_receive_timeout(connection, HANDSHAKE_TIMEOUT_S)
            deliver_challenge(connection, self._key)
            answer_challenge(connection, self._key)
            _set_receive_timeout(connection, 0)
        except (AuthenticationError, OSError, EOFError) as error:
            logger.debug("refused a connection from %s: %s", peer_ip, error)
            connection.close()
            return None
        return Channel(connection)

    def close(self) -> None:
        self._listener.close()


def _set_receive_timeout(connection: Connection, seconds: float) -> None:
    """SO_RCVTIMEO on the connection's socket (0: none): a blocked read then fails instead of waiting."""
    with _socket_of(connection) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(seconds), 0))


def _socket_of(connection: Connection) -> socket.socket:
    """The connection's socket, through a duplicate of its file descriptor (close it after use)."""
    return socket.fromfd(connection.fileno(), socket.AF_INET, socket.SOCK_STREAM)
