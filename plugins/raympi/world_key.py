"""Where the launch agents of a world on several nodes get its key (see raympi.launch_agent, raympi.preflight): from
the world's `KeyServer`, a Ray actor on rank 0's node (see raympi.spread), which hands it to processes of its own
user there over a Unix socket of the abstract namespace named by the world's id. So the key passes through no
runtime env (Ray logs it and keeps it in its state), command line or environment. Linux only, as such worlds are.
"""

import os
import socket
import socketserver
import struct
import threading

from .channel import HANDSHAKE_TIMEOUT_S, KEY_BYTES

_CREDENTIALS = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid


def _address(world: str) -> str:
    return f"\0raympi-key-{world}"


class KeyServer:
    """Serves `key` to this user's processes of this node (network namespace), from `keep` until the process ends."""

    def keep(self, world: str, key: bytes) -> None:
        server = _Server(_address(world), _SendKey)
        server.key = key
        threading.Thread(target=server.serve_forever, name="raympi-key", daemon=True).start()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def verify_request(self, request, client_address) -> bool:
        _, uid, _ = _CREDENTIALS.unpack(request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
        return uid == os.getuid()


class _SendKey(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.server.key)


def fetch(world: str) -> bytes:
    """The key of `world`, from its KeyServer on this node; ConnectionError saying why not."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            sock.connect(_address(world))
            key = b""
            while len(key) < KEY_BYTES and (data := sock.recv(KEY_BYTES - len(key))):
                key += data
        except OSError as error:
            raise ConnectionError(f"the key of MPI world {world} is not kept on this node ({error}): its placement "
                                  "group was removed, or this is not rank 0's node") from None
    if len(key) != KEY_BYTES:
        raise ConnectionError(f"the key server of MPI world {world} refused this process (user {os.getuid()})")
    return key
