"""A rank forked from a template (raympi.template): how the forked process becomes the rank its shim (raympi.shim)
stands for, and what it keeps of that."""

import atexit
import contextlib
import ctypes
import fcntl
import os
import runpy
import signal
import sys
import traceback
from typing import Dict, List, Optional

_PR_SET_PDEATHSIG = 1

_launcher: Optional[int] = None  # the pid of the launcher that started this rank's shim, once forked


def launcher_pid() -> int:
    """The pid of the launcher (mpirun, or its daemon) that started this rank, forked from a template or not."""
    return _launcher if _launcher is not None else os.getppid()


def become_rank(request: dict, fds: List[int], imported_env: Dict[str, str]) -> None:
    """Turn this forked process into the rank the shim stands for, then run its module as `python -m` would: its
    environment is the shim's, with what the template's imports set where the shim's does not. Never returns."""
    global _launcher
    os.setpgid(0, 0)  # a process group of its own, as a launcher starts each rank: killing it kills no other world's
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # and it ends with the template
    _place_fds(fds, request["fds"])
    os.environ.clear()
    os.environ.update({**imported_env, **request["env"]})
    os.chdir(request["cwd"])
    os.sched_setaffinity(0, request["affinity"])
    os.umask(request["umask"])
    _launcher = request["launcher"]
    sys.path[0] = request["cwd"]  # as `python -m` puts it
    sys.argv = [request["module"], *request["argv"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: B036 -- as the interpreter reports what ends it
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _place_fds(received: List[int], numbers: List[int]) -> None:
    """Give the descriptors the shim sent the numbers they have in the shim, and close the template's own stdio."""
    high = max([*numbers, *received, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, high) for fd in received]
    for fd in received:
        os.close(fd)
    for fd, number in zip(moved, numbers):
        os.dup2(fd, number)
        os.close(fd)
    for number in {0, 1, 2} - set(numbers):
        with contextlib.suppress(OSError):
            os.close(number)
