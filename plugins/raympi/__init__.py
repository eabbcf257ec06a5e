"""MPI on Ray: the `mpi` runtime env, brought back out of tree and made robust.

Its modules import Ray where they use it: MPI peers import this package (raympi.runner) and need no Ray.
"""

from .command import py_executable
from .errors import MPIRankError, MPIWorldError
from .init import mpi_init
from .placement import placement
from .registration import init_ray, registration_env

__all__ = ["MPIRankError", "MPIWorldError", "init_ray", "mpi_init", "placement", "py_executable", "registration_env"]
