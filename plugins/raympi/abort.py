"""MPI_Abort called from Python ends the world as a failing rank does, and the error names the rank and the code.

MPI's own abort tells the caller neither. Open MPI's mpirun prints them in its log, and the call's error says only
that the rank exited. MPICH's and Intel MPI's Hydra SIGKILL every rank at once, rank 0 and its Ray worker included,
and the caller gets Ray's WorkerCrashedError. So each rank's communicators (mpi4py's Comm.Abort) call the rank's
`handle` in place of MPI_Abort: the rank reports, and rank 0 ends the world. `handle` gets the real abort, for
where rank 0 cannot end the world (see raympi.peer).

mpi4py's types refuse new attributes, so the method is replaced in the type's namespace, a CPython detail
(tests/test_flavours.py checks it on every flavour). MPI_Abort called from C code still ends the world, as MPI's.
"""

import ctypes
import gc
import traceback
from typing import Callable

# handle(reason, where it was called, the real abort): never returns
Handle = Callable[[str, str, Callable[[], None]], None]


def catch(handle: Handle) -> None:
    """Every communicator's Abort calls `handle` from now on, in place of MPI_Abort."""
    from mpi4py import MPI

    real = MPI.Comm.Abort

    def abort(comm, errorcode: int = 0):
        name = comm.Get_name() or f"a communicator of {comm.Get_size()} ranks"
        where = "Called from (most recent call last):\n" + "".join(traceback.format_stack()[:-1])
        handle(f"called MPI_Abort({name}, {errorcode})", where, lambda: real(comm, errorcode))

    abort.__doc__ = real.__doc__
    gc.get_referents(MPI.Comm.__dict__)[0]["Abort"] = abort
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(MPI.Comm))
