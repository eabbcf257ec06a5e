"""What tests/test_template.py has a template fork (`python -m template_entries <what> ...`), as raympi.runner is."""

import json
import os
import signal
import sys
import tempfile
import time

from raympi.forked import launcher_pid


def report(out: str, extra_fd: str) -> None:
    """What this process was given, and by whom it was started; a line to `extra_fd` and to stdout."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
        forked = b"raympi.template" in parent.read()
    os.write(int(extra_fd), b"through the extra descriptor")
    print("on stdout", flush=True)
    umask = os.umask(0)
    with open(out, "w") as f:
        json.dump({"forked": forked, "launcher": launcher_pid(), "cwd": os.getcwd(), "argv": sys.argv[1:],
                   "world": os.environ.get("OMPI_TEST_WORLD"), "cpus": sorted(os.sched_getaffinity(0)),
                   "umask": umask, "value": __import__("changing").VALUE, "pgid": os.getpgid(0),
                   "set_by_import": os.environ.get("I_MPI_SET_BY_IMPORT"), "tmp": tempfile.gettempdir(),
                   "made_by_import": getattr(sys.modules.get("makes_tmp"), "MADE", None)}, f)


def exit_with(code: str) -> None:
    sys.exit(int(code))


def wait(out: str, handle: str) -> None:
    """Write this process's pid to `out`, then wait; with `handle` == "yes", SIGTERM writes "term" and exits 3."""
    if handle == "yes":
        def term(*_):
            with open(out, "a") as f:
                f.write(" term")
            os._exit(3)

        signal.signal(signal.SIGTERM, term)
    with open(out, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


if __name__ == "__main__":
    {"report": report, "exit": exit_with, "wait": wait}[sys.argv[1]](*sys.argv[2:])
