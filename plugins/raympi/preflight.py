"""What the `mpi` runtime env checks while Ray sets it up, before any worker starts.

A world that fails before rank 0 registers with Ray (the launcher refusing its args, an interpreter without
raympi or mpi4py, an mpi4py that loads another MPI than the flavour's, a host whose daemon launcher is gone or
does not know the key) is a worker that died starting: Ray starts another, and another, for as long as the call
waits, with the cause only in the logs. Found here, the same cause fails the call at once as a
RuntimeEnvSetupError.
"""

import asyncio
import dataclasses
import os
import shlex
import signal
from typing import List, Optional, Set, Tuple

from . import world_key
from .channel import CONNECT_ERRORS, Channel
from .command import mpirun_command
from .config import MPIConfig
from .flavours import FLAVOURS

# How long a check may take (a Python start, the launcher's dry run) before it is stopped and the world refused.
CHECK_TIMEOUT_S = 60.0

# (interpreter (a py_executable value), flavour) pairs known to import raympi and run mpi4py on that flavour.
_RUNNING: Set[Tuple[str, str]] = set()


async def problems(config: MPIConfig, python: str) -> List[str]:
    """What keeps the world of `config`, started with `python` (a Ray py_executable), from starting."""
    found = await asyncio.gather(_cannot_run(python, config.flavour),
                                 *(_launcher_unreachable(config, host) for host in config.hosts[1:]))
    if found[0] is None:  # else the launcher found may be another flavour's, refusing what is not its own
        found.append(await _launcher_refuses(config, python))
    return [problem for problem in found if problem is not None]


async def _launcher_refuses(config: MPIConfig, python: str) -> Optional[str]:
    """The flavour's launcher checks the args (slots, flags) (see Flavour.dry_run); one whose dry run starts ranks,
    on rank 0's node only: there it starts no daemon elsewhere, whose failure would not be the args'."""
    flavour = FLAVOURS[config.flavour]
    if flavour.dry_run_starts_ranks:
        config = dataclasses.replace(config, hosts=config.hosts[:1], launchers={}, world=None)
    code, _, stderr = await _run(mpirun_command(config, python, dry_run=True))
    return f"{flavour.launcher} rejected runtime_env['mpi']['args'] = {config.args}:\n{stderr}" if code else None


async def _cannot_run(python: str, flavour: str) -> Optional[str]:
    """Once per interpreter and flavour for as long as the runtime env agent runs (as its node does): a Python
    start costs."""
    if (python, flavour) in _RUNNING:
        return None
    probe = "import raympi.runner; from raympi.flavours import library_version; print(library_version())"
    code, stdout, stderr = await _run([*shlex.split(python), "-c", probe])
    if code:
        last = stderr.strip().splitlines()[-1:] or [f"exit status {code}"]
        return (f"every rank runs `{python} -m raympi.runner`, which cannot import raympi and mpi4py there "
                f"({last[0]}): install them into that environment "
                f"(pip install 'flytekitplugins-raympi[{flavour}]')")
    mismatch = FLAVOURS[flavour].mismatch(stdout)
    if mismatch is None:
        _RUNNING.add((python, flavour))
    return mismatch and f"`{python}`: {mismatch}"


async def _launcher_unreachable(config: MPIConfig, host: str) -> Optional[str]:
    """The daemon launcher of another host answers and knows the world's key."""
    ip = host.rsplit(":", 1)[0]
    address = (ip, config.launchers[ip])
    try:
        launcher = await asyncio.get_running_loop().run_in_executor(
            None, lambda: Channel.connect(address, world_key.fetch(config.world)))
    except CONNECT_ERRORS as error:
        return (f"the daemon launcher of host {ip} at {ip}:{address[1]} does not answer ({error}): take "
                "runtime_env['mpi'] hosts, launchers and world from raympi.placement(...) while its placement "
                "group exists")
    launcher.close()
    return None


async def _run(argv: List[str]):
    """The exit status, stdout and stderr of `argv`; one that takes longer than CHECK_TIMEOUT_S is killed, with all it
    started, and fails (status -9) saying so."""
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return process.returncode, "", f"{shlex.join(argv)} did not end within {CHECK_TIMEOUT_S:.0f} s: stopped"
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
