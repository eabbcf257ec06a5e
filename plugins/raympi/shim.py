"""What the launcher starts as a rank when the world's ranks fork from a template (see raympi.template):

    <python> -S shim.py <python> <preload,...> <module> <its arguments>

for `<python> -m <module> <its arguments>` (raympi.runner's).

It hands this process's environment, working directory, CPU affinity, umask and open file descriptors (stdin,
stdout, stderr, Hydra's PMI_FD) to the template of its node and environment, which forks the rank from them. It then
stands for the rank to the launcher: the signals it gets reach the rank, it exits as the rank did, and the rank is
killed when it is. With no template to fork from, it starts one and waits for it, as do the ranks that find it
starting: a template's imports take about as long as one rank's, which each rank would otherwise do itself. Where
none can start, or none listens within WAIT_S, it becomes the rank itself.

Run by path with `python -S`: it imports nothing but the standard library, and no site-packages.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

# The variables a launcher sets for each rank of each world: the template's key leaves them out (every world would
# need a template of its own), and nothing reads them before MPI_Init. PYTHONBREAKPOINT: Ray's, for rank 0 only;
# RAYMPI_LAUNCHERS and RAYMPI_WORLD: for the launch agent of a world on several nodes (raympi.launch_agent);
# DYLD_LIBRARY_PATH: Open MPI's daemon on another node sets it (macOS's linker reads it; Linux's does not).
PER_WORLD = ("OMPI_", "PMIX_", "PRTE_", "OPAL_", "PMI_", "HYDRA_", "HYDI_", "MPI_LOCAL", "I_MPI_", "PYTHONBREAKPOINT",
             "RAYMPI_LAUNCHERS", "RAYMPI_WORLD", "DYLD_LIBRARY_PATH")
# Search paths that a launcher lengthens: Open MPI's daemon on another node adds its library directory to
# LD_LIBRARY_PATH once more than mpirun does, and an empty entry. A template's is as the linker searches it (each
# directory once, in order; an empty entry is the working directory, "/" in a template), so that a node's ranks fork
# from one template whichever node runs mpirun.
SEARCH_PATHS = ("LD_LIBRARY_PATH",)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)
MESSAGE_LIMIT = 1 << 20
SOCKET_PATH_LIMIT = 108  # Linux's sun_path, its terminating NUL included
# How long a rank waits for its node's template to listen, once one is starting, before it starts without one.
WAIT_S = 30.0


def main(argv) -> None:
    python, preload, module, module_argv = argv[0], argv[1], argv[2], argv[3:]
    path = socket_path(python, preload)
    template = path and _template(python, preload, path[:-len(".sock")])
    if template:
        _run_forked(template, module, module_argv)
    os.execvp(shlex.split(python)[0], [*shlex.split(python), "-m", module, *module_argv])


def template_env() -> dict:
    """This process's environment without what differs between worlds: the template's, and part of its key."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(PER_WORLD)}
    for name in env.keys() & set(SEARCH_PATHS):
        env[name] = ":".join(dict.fromkeys(filter(None, env[name].split(":"))))
    return env


def socket_path(python: str, preload: str):
    """The template's socket for this interpreter, preload, environment, niceness, network and user, in a directory
    of this user's that nobody else can enter; None where no such directory can be made."""
    directory = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"raympi-templates-{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        status = os.lstat(directory)
        network = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None
    if status.st_uid != os.getuid() or status.st_mode & 0o077 or not os.path.isdir(directory):
        return None
    key = json.dumps([python, preload, os.getpriority(os.PRIO_PROCESS, 0), network, sorted(template_env().items())])
    path = os.path.join(directory, hashlib.sha256(key.encode()).hexdigest()[:24] + ".sock")
    return path if len(path.encode()) < SOCKET_PATH_LIMIT else None


def _template(python: str, preload: str, name: str):
    """A connection to the template serving at NAME.sock: the one listening, or one starting (whoever holds NAME.lock
    starts or serves; this rank starts one if none does); None if none can start (its NAME.log says why), or none
    listens within WAIT_S."""
    deadline, started = time.monotonic() + WAIT_S, False
    while time.monotonic() < deadline:
        template = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            template.connect(f"{name}.sock")
            return template
        except OSError:  # none listens yet, or one ended
            template.close()
        lock = _free_lock(name)
        if lock is not None:  # none starts or serves
            with lock:
                if could_not_start(name):
                    print(f"raympi: this rank starts without a template: the last one could not start ({name}.log)",
                          file=sys.stderr)
                    return None
                if started:  # it ended without serving (one killed as it started leaves no log)
                    return None
                _start_template(python, preload, name, lock)
                started = True
        time.sleep(0.02)
    print(f"raympi: this rank starts without a template: none listened within {WAIT_S:.0f} s", file=sys.stderr)
    return None


def could_not_start(name: str) -> bool:
    """Whether the last template of NAME could not start (its NAME.log says why): then no rank starts another."""
    log = f"{name}.log"
    return os.path.exists(log) and os.path.getsize(log) > 0


def _free_lock(name: str):
    """NAME.lock, opened and locked by this process; None if another holds it. Locked as the file at that path (one
    a template removed as it ended could be locked by one rank while another makes a new one)."""
    lock = open(f"{name}.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(lock.fileno()).st_ino == os.stat(lock.name).st_ino:
            return lock
    except OSError:  # held; or removed meanwhile
        pass
    lock.close()
    return None


def _start_template(python: str, preload: str, name: str, lock) -> None:
    """Start the template, in a session of its own and orphaned at once: a rank's end takes its process group and
    descendants with it. It inherits `lock`, held as long as it starts or serves."""
    if os.fork() == 0:
        try:
            with open(f"{name}.log", "wb") as stderr:
                subprocess.Popen([*shlex.split(python), "-m", "raympi.template", f"{name}.sock", preload,
                                  str(lock.fileno())], cwd="/", env=template_env(), stdin=subprocess.DEVNULL,
                                 stdout=stderr, stderr=stderr, pass_fds=(lock.fileno(),), start_new_session=True)
        finally:
            os._exit(0)
    os.wait()


def _run_forked(template: socket.socket, module: str, module_argv) -> None:
    """The rank, forked by the template from what this process hands over; exit as it does. Returns only if the
    template started none."""
    pending, rank = [], None

    def forward(signum, _frame):
        if rank is None:
            pending.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(rank, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    fds = [fd for fd in sorted(map(int, os.listdir("/proc/self/fd"))) if fd != template.fileno() and _is_open(fd)]
    request = {"module": module, "argv": module_argv, "env": dict(os.environ), "cwd": os.getcwd(),
               "launcher": os.getppid(), "fds": fds, "affinity": sorted(os.sched_getaffinity(0)), "umask": _umask()}
    try:
        socket.send_fds(template, [json.dumps(request).encode()], fds)
        started = template.recv(MESSAGE_LIMIT)
    except OSError:  # the template ended meanwhile
        started = b""
    if not started:  # no rank forked: this process becomes it, and gets what it was sent meanwhile
        template.close()
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        for signum in pending:
            os.kill(os.getpid(), signum)
        return
    rank = json.loads(started)["pid"]
    for signum in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank, signum)
    ended = template.recv(MESSAGE_LIMIT)
    if not ended:
        print(f"raympi: the template that forked rank pid {rank} ended, and the rank with it", file=sys.stderr)
        os._exit(1)
    status = json.loads(ended)["status"]
    if os.WIFSIGNALED(status):  # as its rank was
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _is_open(fd: int) -> bool:
    """Whether `fd` is still open: listing /proc/self/fd opened one of its own, closed since."""
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    main(sys.argv[1:])
