"""What ranks 1..N-1 run under mpirun: wait for rank 0's go, run the worker entry, report.

Rank 0 ends the world. Open MPI aborts rank 0 when a peer exits with an error, which would race the report
rank 0 sends its caller, so a peer reports, then exits with status 0 when rank 0 says so or closes the
channel. Only when rank 0 stays silent (frozen) does a failed peer exit with an error of its own."""

import contextlib
import importlib
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import List

from . import abort, world
from .channel import Channel
from .errors import MPIRankError
from .messages import Done, Failed, Go, Hello, Output

# How long a failed peer waits for rank 0 to end the world. Rank 0 is silent only when frozen (an MPI call
# holding the GIL); the peer then exits with an error, and mpirun ends the world.
RANK0_SILENCE_LIMIT_S = 30.0
# Output without a line end is forwarded in pieces of this size.
LINE_LIMIT = 64 * 1024


def run(rank: int, rank0_address: tuple, key: bytes, worker_entry: str) -> None:
    channel = Channel.connect(rank0_address, key)
    channel.send(Hello(rank, socket.gethostname(), os.getpid()))
    world.join(rank, channel)
    world.mark("joined")
    output = [OutputForwarder(fd, name, channel) for fd, name in ((1, "stdout"), (2, "stderr"))]

    def fail(reason: str, trace: str, end=lambda: _exit(1)) -> None:
        """Report; rank 0 then ends the world. Only when rank 0 stays silent does this rank say it itself, then
        `end` (exit, or the real MPI_Abort: see raympi.abort)."""
        world.mark("ended")
        # On a thread: with rank 0 frozen, a send waits behind the output (a thread of the rank's writes on) for good.
        threading.Thread(target=_report, args=(output, channel, Failed(reason, trace, world.report())),
                         name="raympi-report", daemon=True).start()
        time.sleep(RANK0_SILENCE_LIMIT_S)
        # Rank 0 will not report it: this rank's own stderr (mpirun's, the Ray worker's log) does.
        print(MPIRankError(rank, socket.gethostname(), os.getpid(), reason, trace), file=sys.stderr, flush=True)
        end()

    abort.catch(fail)
    go = queue.Queue()
    threading.Thread(target=_follow_rank0, args=(channel, go), name="raympi-control", daemon=True).start()
    try:
        entry = import_entry(worker_entry)
        os.environ.update(go.get())
        entry()
    except BaseException as error:  # noqa: B036 -- every failure, SystemExit included, is reported
        fail(f"raised {type(error).__name__}: {error}", traceback.format_exc())
    world.mark("ended")
    _report(output, channel, Done(world.report()))
    threading.Event().wait()


def import_entry(worker_entry: str):
    """The function named by a dotted path "package.module.function"."""
    module_name, _, function_name = worker_entry.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def _follow_rank0(channel: Channel, go: queue.Queue) -> None:
    """Hand rank 0's go (the env to run with) to the main thread; end this process at once when rank 0 says
    exit (a rank failed) or closes the channel (the world ended)."""
    while isinstance(message := channel.receive(), Go):
        go.put(message.env)
    _exit(0)


def _exit(status: int) -> None:
    """End this rank with the processes it started, as Ray ends a worker (rank 0) with its children."""
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(status)


def _descendants(pid: int) -> List[int]:
    """The processes `pid` started, and theirs (Linux's /proc: a peer imports no more than it runs)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone meanwhile
        return []
    children = []
    for thread in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            with open(f"/proc/{pid}/task/{thread}/children") as listed:
                children += map(int, listed.read().split())
    return children + [d for child in children for d in _descendants(child)]


def _report(output, channel: Channel, end) -> None:
    """Send `end` to rank 0 after all this rank wrote."""
    sys.stdout.flush()
    sys.stderr.flush()
    for forwarder in output:
        forwarder.drain()
    channel.send(end)


class OutputForwarder:
    """Sends what this process writes to `fd` to rank 0, which prints it tagged with the rank; so do its children,
    which inherit `fd`, for as long as this process lives."""

    def __init__(self, fd: int, name: str, channel: Channel):
        self._original = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        self._write_end = write_end  # kept open: the children's writes outlive this process's own
        self._fd, self._name, self._channel = fd, name, channel
        # Written once, atomically (below PIPE_BUF), after all this process wrote: when it is read, all of that was.
        self._marker = b"\0raympi-drained-" + os.urandom(8).hex().encode() + b"\0"
        self._drained = threading.Event()
        threading.Thread(target=self._pump, args=(read_end,), name=f"raympi-{name}", daemon=True).start()

    def _pump(self, read_end: int) -> None:
        """Send every completed line (ended by a newline, or a carriage return as progress bars rewrite theirs)
        at once, and a line that grows past LINE_LIMIT in pieces: what is held back stays bounded. At the marker,
        send what came before it, line ended or not, and say the stream is drained."""
        pending = b""
        while data := os.read(read_end, 65536):
            pending += data
            before, marker, after = pending.partition(self._marker)
            if marker:
                if before:
                    self._send(before)
                pending = after
                self._drained.set()
            end = max(pending.rfind(b"\n"), pending.rfind(b"\r"))
            if end >= 0:
                self._send(pending[:end])
                pending = pending[end + 1:]
            if len(pending) >= LINE_LIMIT:  # keeps what may be the start of the marker
                cut = len(pending) - len(self._marker)
                self._send(pending[:cut])
                pending = pending[cut:]
        if pending:
            self._send(pending)

    def _send(self, data: bytes) -> None:
        self._channel.send(Output(self._name, data.decode(errors="replace")))

    def drain(self) -> None:
        """Point `fd` back where it was (mpirun) and wait until all this process wrote to it was sent (at most 10 s,
        should rank 0 stop reading). What its children write is still sent, without waiting for them."""
        os.dup2(self._original, self._fd)
        os.write(self._write_end, self._marker)
        self._drained.wait(timeout=10)
