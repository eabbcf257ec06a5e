"""A process per node and environment that has done the ranks' imports once (mpi4py, Ray's worker, raympi's and the
world's `preload`, such as flytekit) and forks each rank from them: a rank starts in milliseconds instead of importing
for a second or more. Started by the first rank's shim that finds none (see raympi.shim), holding the lock it is
given (NAME.lock, locked as descriptor <lock fd>) for as long as it starts or serves:

    python -m raympi.template <socket path NAME.sock> <preload,...> <lock fd>

It runs no user code (a rank imports its task's module itself, as it is now) and has no thread but its own (it does
not start if an import started one), so forking it is as safe as starting a fresh interpreter. What its imports make
in the temporary directory (flytekit makes two directories) lies in NAME.tmp, its own, and goes with it: a rank uses
it as its template's. Its socket lies in a directory only its user can enter, and it forks only for a peer of its
own user. It ends when the raylet it was started under ends, or after IDLE_S without a rank, its ranks with it.
"""

import contextlib
import errno
import fcntl
import gc
import glob
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from typing import Dict, List, Optional, Tuple

from . import forked
from .ray_internals import DEFAULT_WORKER_MODULE, RAYLET_PID_ENV
from .shim import MESSAGE_LIMIT, could_not_start

# How long a template waits for a rank to fork before it ends.
IDLE_S = 600.0
# Always imported: what raympi.runner imports (not itself: each rank runs it as `python -m` does), and Ray's worker.
BASE_PRELOAD = ("raympi.flavours", "raympi.peer", "raympi.rank0", DEFAULT_WORKER_MODULE)


def main(path: str, preload: str, lock_fd: str) -> None:
    """Serve at `path` (NAME.sock, beside NAME.lock, NAME.log, its stderr, and NAME.tmp); remove them when it ends.
    One that cannot start leaves its lock and log, which tells shims not to start another (see raympi.shim)."""
    name = path[:-len(".sock")]
    lock = os.fdopen(int(lock_fd), "w")
    _sweep(os.path.dirname(path))
    try:
        listener, imported_env = _ready(name, preload)
    except BaseException:  # noqa: B036 -- whatever it is, the log says it
        traceback.print_exc()
        shutil.rmtree(f"{name}.tmp", ignore_errors=True)
        sys.exit(1)
    try:
        _Template(listener, lock, imported_env).serve()
    finally:
        _remove(name)


def _remove(name: str) -> None:
    """Remove the files of template NAME."""
    for leftover in (f"{name}.sock", f"{name}.lock", f"{name}.log"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    shutil.rmtree(f"{name}.tmp", ignore_errors=True)


def _sweep(directory: str) -> None:
    """Remove what templates that were killed left (their socket, lock, empty log and temporary directory: a PID
    namespace or a container ends with SIGKILL): a lock that nobody holds. What a template that could not start left
    stays (see main)."""
    for lock_path in glob.glob(os.path.join(directory, "*.lock")):
        name = lock_path[:-len(".lock")]
        if could_not_start(name):
            continue
        try:
            with open(lock_path) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _remove(name)
        except OSError:  # held (it serves, or starts, as this one does), or removed meanwhile
            continue


def _ready(name: str, preload: str) -> Tuple[socket.socket, Dict[str, str]]:
    """Import what the ranks need, making temporary files in NAME.tmp, then listen at NAME.sock; and the environment
    variables the imports set (mpi4py's FI_PROVIDER_PATH for Intel MPI's libfabric, say), which a fresh rank's
    imports would set too. A thread started by an import would be missing, or holding a lock forever, in every forked
    rank: such a template does not start."""
    modules, before = [*BASE_PRELOAD, *filter(None, preload.split(","))], dict(os.environ)
    os.makedirs(f"{name}.tmp", mode=0o700, exist_ok=True)
    tempfile.tempdir = f"{name}.tmp"
    _preload(modules)
    tempfile.tempdir = None  # a forked rank's is its own TMPDIR, as a fresh rank's
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        raise RuntimeError(f"importing {', '.join(modules)} started {threads - 1} thread(s): ranks forked from this "
                           "process would lack them; leave the module that starts them out of `preload`")
    gc.freeze()  # what the imports made stays shared with the ranks: the collector would touch every page
    sys.stderr.flush()  # its log, which tells why a template could not start: what the imports warned of goes
    os.ftruncate(sys.stderr.fileno(), 0)
    os.lseek(sys.stderr.fileno(), 0, os.SEEK_SET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{name}.sock")  # a template's that ended without removing it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(f"{name}.sock")
    listener.listen(64)
    return listener, {var: value for var, value in os.environ.items() if before.get(var) != value}


def _preload(modules: List[str]) -> None:
    import mpi4py

    mpi4py.rc.initialize = False  # as raympi.runner: MPI_Init is the rank's
    importlib.import_module("mpi4py.MPI")
    for module in modules:
        importlib.import_module(module)


class _Template:
    def __init__(self, listener: socket.socket, lock, imported_env: Dict[str, str]):
        self._listener, self._lock, self._imported_env = listener, lock, imported_env
        self._selector = selectors.DefaultSelector()
        self._ranks: Dict[int, socket.socket] = {}  # pid: its shim's connection
        self._shims: Dict[socket.socket, Optional[int]] = {}  # connection: its rank's pid, once forked
        self._children_ended, self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._selector.register(self._children_ended, selectors.EVENT_READ, self._reap)
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._raylet = _pidfd(os.environ.get(RAYLET_PID_ENV))
        if self._raylet is not None:
            self._selector.register(self._raylet, selectors.EVENT_READ, self._raylet_ended)
        self._idle_since: Optional[float] = time.monotonic()  # None while a rank runs
        self._ending = False

    def serve(self) -> None:
        while not self._ending:
            idle_left = None if self._idle_since is None else self._idle_since + IDLE_S - time.monotonic()
            if idle_left is not None and idle_left <= 0:
                return
            for key, _ in self._selector.select(timeout=idle_left):
                try:
                    key.data(key.fileobj)
                except OSError as error:  # out of descriptors, say: the template serves on, its ranks too
                    print(f"raympi template: {error}", file=sys.stderr, flush=True)
                    time.sleep(0.1)
        for pid in self._ranks:
            _kill(pid)

    def _accept(self, _listener) -> None:
        shim, _ = self._listener.accept()
        uid = struct.unpack("3i", shim.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[2]
        if uid != os.getuid():  # the directory's mode keeps others out; this says so at the door too
            shim.close()
            return
        self._shims[shim] = None
        self._selector.register(shim, selectors.EVENT_READ, self._from_shim)

    def _from_shim(self, shim: socket.socket) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(shim, MESSAGE_LIMIT, 255)
        except OSError:
            message, fds = b"", []
        pid = self._shims[shim]
        if pid is not None or not message:  # the shim ended (killed, as its rank's end is its own): so does its rank
            if pid is not None:
                _kill(pid)
            self._drop(shim)
            for fd in fds:
                os.close(fd)
            return
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:  # the rank: it never returns into the template's loop
            try:
                self._close_in_rank()
                forked.become_rank(json.loads(message), fds, self._imported_env)
            except BaseException:  # noqa: B036 -- it could not become the rank: its stderr says why
                traceback.print_exc()
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        if pid < 0:
            self._drop(shim)  # the shim then starts the rank itself
            return
        self._shims[shim], self._ranks[pid], self._idle_since = pid, shim, None
        with contextlib.suppress(OSError):
            shim.send(json.dumps({"pid": pid}).encode())

    def _reap(self, _pipe) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._children_ended, 256):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            shim = self._ranks.pop(pid, None)
            if shim is not None and shim in self._shims:
                with contextlib.suppress(OSError):
                    shim.send(json.dumps({"status": status}).encode())
                self._drop(shim)
            if not self._ranks:
                self._idle_since = time.monotonic()

    def _raylet_ended(self, _pidfd) -> None:
        self._ending = True

    def _drop(self, shim: socket.socket) -> None:
        self._shims.pop(shim, None)
        self._selector.unregister(shim)
        shim.close()

    def _close_in_rank(self) -> None:
        """In the forked rank: nothing of the template's stays open or installed."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
            else:
                os.close(key.fd)
        self._selector.close()
        os.close(self._wake)
        self._lock.close()


def _pidfd(pid: Optional[str]) -> Optional[int]:
    """A descriptor that becomes readable when process `pid` ends; None without one (the idle limit ends it)."""
    if not pid:
        return None
    try:
        return os.pidfd_open(int(pid))
    except (OSError, AttributeError) as error:
        if getattr(error, "errno", None) == errno.ESRCH:
            sys.exit(f"raympi template: the raylet {pid} is gone")
        return None


def _kill(pid: int) -> None:
    """Kill the rank and what it started in its process group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:])
