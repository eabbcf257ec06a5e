"""How rank 0 and its peers talk outside MPI: `multiprocessing.connection` over TCP, authenticated both
ways with a per-world key (HMAC challenge-response) before any message is unpickled.

MPI calls block in C and cannot be interrupted, so supervision (go, output, failure, done) and liveness
(a closed connection means a dead rank) travel on this channel instead. The key reaches the peers in
MPI's own broadcast of rank 0's address, never over this channel.
"""

import errno
import logging
import secrets
import socket
import struct
import threading
import time
from multiprocessing.connection import AuthenticationError, Connection, answer_challenge, deliver_challenge
from typing import Callable, Dict, Tuple

logger = logging.getLogger(__name__)

# How long a new connection may take to authenticate; one that says nothing is dropped then.
HANDSHAKE_TIMEOUT_S = 10.0
# How many connections a listener authenticates at once (see ChannelListener).
MAX_HANDSHAKES = 64
# How long a listener out of file descriptors (or memory) waits before it accepts again.
ACCEPT_RETRY_S = 0.1
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# What Channel.connect raises when no channel comes of it: unreachable, silent, closed, or a wrong key.
CONNECT_ERRORS = (OSError, EOFError, AuthenticationError)
KEY_BYTES = 32  # a world's key: 256 bits


def new_key() -> bytes:
    """A world's secret: 256 random bits."""
    return secrets.token_bytes(KEY_BYTES)


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
        except BlockingIOError:  # what a receive timeout raises
            connection.close()
            raise TimeoutError(f"{address[0]}:{address[1]} accepted the connection but did not complete the "
                               f"handshake within {HANDSHAKE_TIMEOUT_S:.0f} s") from None
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
        _shut_down(self._connection)
        self._connection.close()


class ChannelListener:
    """Listens on `host` (never the wildcard address) and hands each channel, once authenticated, to
    `serve(channel, peer_ip)` on a thread of its own, until closed.

    Strangers cannot stop it: it keeps accepting through errors (out of file descriptors, aborted connections), and
    at most MAX_HANDSHAKES connections authenticate at once, the oldest dropped for a newer one, so that a flood of
    silent connections neither piles up threads nor keeps out a peer (whose handshake takes a round trip)."""

    def __init__(self, host: str, key: bytes, serve: Callable[[Channel, str], None], backlog: int = 128):
        self._server = socket.create_server((host, 0), backlog=backlog)
        self._key, self._serve = key, serve
        self._handshakes: Dict[Connection, None] = {}  # in flight, oldest first
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="raympi-accept", daemon=True).start()

    @property
    def address(self) -> Tuple[str, int]:
        return self._server.getsockname()[:2]

    def close(self) -> None:
        self._closed.set()
        # shutdown() first: it wakes the thread blocked in accept(), close() would not.
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, (peer_ip, *_) = self._server.accept()
            except OSError as error:
                if self._closed.is_set():
                    return
                logger.debug("accepting a connection failed (%s): accepting on", error)
                time.sleep(ACCEPT_RETRY_S if error.errno in _OUT_OF_RESOURCES else 0)
                continue
            connection = Connection(sock.detach())
            with self._lock:
                if len(self._handshakes) >= MAX_HANDSHAKES:
                    oldest = next(iter(self._handshakes))
                    del self._handshakes[oldest]
                    _shut_down(oldest)  # its thread's read fails, and it closes the connection
                self._handshakes[connection] = None
            threading.Thread(target=self._authenticate, args=(connection, peer_ip), name="raympi-handshake",
                             daemon=True).start()

    def _authenticate(self, connection: Connection, peer_ip: str) -> None:
        """Serve the channel once the peer proved it has the key and this end proved it too; else close it."""
        try:
            _set_receive_timeout(connection, HANDSHAKE_TIMEOUT_S)
            deliver_challenge(connection, self._key)
            answer_challenge(connection, self._key)
            _set_receive_timeout(connection, 0)
        except (AuthenticationError, OSError, EOFError) as error:
            logger.debug("refused a connection from %s: %s", peer_ip, error)
            with self._lock:
                self._handshakes.pop(connection, None)
            connection.close()
            return
        with self._lock:
            dropped = self._handshakes.pop(connection, "dropped") == "dropped"
        if dropped:  # shut down for a newer connection as it completed: the peer sees a closed channel
            connection.close()
            return
        self._serve(Channel(connection), peer_ip)


def _set_receive_timeout(connection: Connection, seconds: float) -> None:
    """SO_RCVTIMEO on the connection's socket (0: none): a blocked read then fails instead of waiting."""
    with _socket_of(connection) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(seconds), 0))


def _shut_down(connection: Connection) -> None:
    """End the connection both ways, waking a thread blocked reading it (close() alone would not)."""
    try:
        with _socket_of(connection) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _socket_of(connection: Connection) -> socket.socket:
    """The connection's socket, through a duplicate of its file descriptor (close it after use)."""
    return socket.fromfd(connection.fileno(), socket.AF_INET, socket.SOCK_STREAM)
