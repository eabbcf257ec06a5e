"""`mpi_init()`: what MPI code calls first, on any rank, as with Ray's former `ray.runtime_env.mpi_init`."""

from . import world


def mpi_init() -> None:
    """Check that this process is a rank of an MPI world started by the `mpi` runtime env; callable on every
    rank, any number of times, as Ray's was.

    Peers are started with rank 0's accelerator visibility before their worker entry runs; this turns the
    silent case (Ray ignores an unregistered runtime env field) into a clear error.
    """
    if not world.joined():
        raise RuntimeError(
            "mpi_init() was called outside an MPI world: the 'mpi' runtime env was not applied. "
            "Start Ray with it registered (raympi.init_ray(), or "
            "RAY_RUNTIME_ENV_PLUGINS='[{\"class\": \"raympi.plugin.MPIPlugin\"}]' where Ray starts) "
            "and pass runtime_env={'mpi': {...}} to the task or actor."
        )
