"""TCP sockets of a process as the kernel lists them (/proc/<pid>/net/tcp*, in the process's own network
namespace), whatever the process believes it opened."""

import ipaddress
import os
import struct
from typing import Set, Tuple

LISTEN, ESTABLISHED = "0A", "01"
Address = Tuple[str, int]


def tcp_sockets(pid: int, state: str) -> Set[Tuple[Address, Address]]:
    """(local, remote) addresses of `pid`'s TCP sockets in `state` (LISTEN, ESTABLISHED)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == state and fields[9] in inodes:
                    found.add((_address(fields[1]), _address(fields[2])))
    return found


def listening(pid: int) -> Set[Address]:
    return {local for local, _ in tcp_sockets(pid, LISTEN)}


def connected_to(pid: int) -> Set[Address]:
    return {remote for _, remote in tcp_sockets(pid, ESTABLISHED)}


def reachable(address: Address) -> Address:
    """Where a client on this host reaches a listener bound to `address` (the wildcard: loopback)."""
    ip, port = address
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    return wildcard.get(ip, ip), port


def _address(hex_address: str) -> Address:
    """"0100007F:1F90" -> ("127.0.0.1", 8080); IPv6 too (the kernel prints each 32-bit word in host order)."""
    hex_ip, hex_port = hex_address.split(":")
    words = [int(hex_ip[i:i + 8], 16) for i in range(0, len(hex_ip), 8)]
    packed = b"".join(struct.pack("=I", word) for word in words)
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(hex_port, 16)
