"""MPI on Ray: the `mpi` runtime env, brought back out of tree and made robust.

Its names are imported on first use, and its modules import Ray where they use it: MPI peers (raympi.runner)
and the launch agent (raympi.launch_agent) import only what they run.
"""

import importlib

_EXPORTS = {
    "MPIRankError": "errors",
    "MPIWorldError": "errors",
    "MPIWorldStartError": "errors",
    "get": "spread",
    "init_ray": "registration",
    "mpi_init": "init",
    "placement": "spread",
    "py_executable": "command",
    "registration_env": "registration",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
