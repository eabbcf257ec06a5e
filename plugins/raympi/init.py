"""`mpi_init()`: what an MPI task or actor calls first, as with Ray's former `ray.runtime_env.mpi_init`."""

from . import rank0


def mpi_init() -> None:
    """Check that this process is rank 0 of an MPI world started by the `mpi` runtime env.

    Peers were already started with rank 0's accelerator visibility when the call began; this
    turns the silent case (Ray ignores an unregistered runtime env field) into a clear error.
    """
    if not rank0.ACTIVE:
        raise RuntimeError(
            "mpi_init() was called outside an MPI world: the 'mpi' runtime env was not applied. "
            "Start Ray with it registered (raympi.init_ray(), or "
            "RAY_RUNTIME_ENV_PLUGINS='[{\"class\": \"raympi.plugin.MPIPlugin\"}]' where Ray starts) "
            "and pass runtime_env={'mpi': {...}} to the task or actor."
        )
