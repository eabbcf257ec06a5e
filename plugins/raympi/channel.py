"""Length-prefixed pickled messages over a TCP socket: how rank 0 and its peers talk outside MPI.

MPI calls block in C and cannot be interrupted, so supervision (go, output, failure, done) and
liveness (a closed socket means a dead rank) travel on this channel instead.
"""

import pickle
import socket
import struct
import threading

_HEADER = struct.Struct("!I")


class Channel:
    """One end of a connection that sends and receives whole Python objects."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._send_lock = threading.Lock()

    @classmethod
    def connect(cls, address: tuple) -> "Channel":
        return cls(socket.create_connection(address))

    def send(self, message) -> None:
        data = pickle.dumps(message)
        with self._send_lock:
            self._sock.sendall(_HEADER.pack(len(data)) + data)

    def receive(self):
        """The next message, or None once the other end has closed."""
        header = self._read(_HEADER.size)
        if header is None:
            return None
        body = self._read(_HEADER.unpack(header)[0])
        return None if body is None else pickle.loads(body)

    def _read(self, size: int):
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self._sock.recv(size - len(chunks))
            except OSError:
                return None
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
