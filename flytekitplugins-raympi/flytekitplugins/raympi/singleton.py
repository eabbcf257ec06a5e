"""The driver runs no rank. But a task module that imports mpi4py.MPI at its top makes each process that imports it
an MPI world of its own (a singleton), the driver too; and Open MPI leaves a singleton's shared memory in /dev/shm
(sm_segment.*, 16 MiB) once it exits."""

import atexit
import contextlib
import os
import sys

from flytekit import logger

_noticed = False


def notice() -> None:
    """If this process initialized MPI: say so once, with the fix, and remove its shared memory as it exits."""
    global _noticed
    mpi = sys.modules.get("mpi4py.MPI")
    if _noticed or mpi is None or not mpi.Is_initialized():
        return
    _noticed = True
    logger.warning("RayMPIJob: this process runs no MPI rank but initialized MPI, which costs it time and Open MPI's "
                   "shared memory (is mpi4py.MPI imported at the top of the task's module?): import mpi4py inside "
                   "the task's function")
    atexit.register(_remove_shared_memory)  # after mpi4py's MPI_Finalize hook, so it runs first: the files are mapped


def _remove_shared_memory() -> None:
    """Remove the files of Open MPI's shared memory that this process maps."""
    with open("/proc/self/maps") as maps:
        paths = {fields[5].rstrip() for fields in (line.split(maxsplit=5) for line in maps)
                 if len(fields) == 6 and "/sm_segment." in fields[5]}
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
