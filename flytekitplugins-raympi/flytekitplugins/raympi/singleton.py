"""The driver runs no rank. But a task module that imports mpi4py.MPI at its top makes each process that imports it
outside a launcher an MPI world of its own (a singleton), the driver too; and Open MPI leaves a singleton's shared
memory in /dev/shm (sm_segment.*, 16 MiB) once it exits."""

import atexit
import contextlib
import os
import sys

from flytekit import logger

from raympi.flavours import FLAVOURS, mapped

_noticed = False


def notice() -> None:
    """If this process is an MPI world of one: say so once, with the fix, and remove its shared memory as it exits."""
    global _noticed
    mpi = sys.modules.get("mpi4py.MPI")
    if _noticed or mpi is None or not mpi.Is_initialized() or mpi.Is_finalized() or mpi.COMM_WORLD.Get_size() > 1:
        return
    _noticed = True
    logger.warning("RayMPIJob: this process runs no MPI rank but initialized MPI, which costs it time and Open MPI's "
                   "shared memory (is mpi4py.MPI imported at the top of the task's module?): import mpi4py inside "
                   "the task's function")
    atexit.register(_remove, mapped(os.path.join(FLAVOURS["openmpi"].backing(), "sm_segment.*")))


def _remove(paths) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
