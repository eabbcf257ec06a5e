"""What ranks 1..N-1 run under mpirun: wait for rank 0's go, run the worker entry, report."""

import importlib
import os
import socket
import sys
import threading
import traceback

from .channel import Channel


def run(rank: int, rank0_address: tuple, worker_entry: str) -> None:
    channel = Channel.connect(rank0_address)
    channel.send(("hello", rank, socket.gethostname(), os.getpid()))
    output = [OutputForwarder(fd, name, channel) for fd, name in ((1, "stdout"), (2, "stderr"))]
    try:
        entry = import_entry(worker_entry)
        message = channel.receive()
        if message is None or message[0] != "go":
            os._exit(1)
        os.environ.update(message[1])
        threading.Thread(target=_exit_when_told, args=(channel,), name="raympi-control", daemon=True).start()
        entry()
    except BaseException as error:  # noqa: B036 -- every failure, SystemExit included, is reported
        report = ("failed", f"raised {type(error).__name__}: {error}", traceback.format_exc())
        _drain(output)
        channel.send(report)
        os._exit(1)
    _drain(output)
    channel.send(("done",))
    # The control thread ends this process when rank 0 closes the channel at the end of the world.
    threading.Event().wait()


def import_entry(worker_entry: str):
    """The function named by a dotted path "package.module.function"."""
    module_name, _, function_name = worker_entry.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def _exit_when_told(channel: Channel) -> None:
    """Rank 0 said exit (a rank failed), or closed the channel (the world ended): end at once."""
    message = channel.receive()
    os._exit(1 if message is not None else 0)


def _drain(output) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for forwarder in output:
        forwarder.drain()


class OutputForwarder:
    """Sends what this process writes to `fd` to rank 0, which prints it tagged with the rank."""

    def __init__(self, fd: int, name: str, channel: Channel):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._fd, self._name, self._channel = fd, name, channel
        self._thread = threading.Thread(target=self._pump, args=(read_end,), name=f"raympi-{name}", daemon=True)
        self._thread.start()

    def _pump(self, read_end: int) -> None:
        pending = b""
        while data := os.read(read_end, 65536):
            complete, newline, pending = (pending + data).rpartition(b"\n")
            if newline:
                self._send(complete)
        if pending:
            self._send(pending)

    def _send(self, data: bytes) -> None:
        self._channel.send(("output", self._name, data.decode(errors="replace")))

    def drain(self) -> None:
        """Close our end of the pipe and wait until everything written so far was sent."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._fd)
        os.close(devnull)
        self._thread.join(timeout=10)
