"""The one command line that starts an MPI world whose rank 0 is a Ray worker: used by the `mpi` runtime env
plugin and, where that plugin cannot be registered, by Ray's `py_executable` field. What differs between MPI
implementations comes from raympi.flavours."""

import json
import shlex
import sys
from pathlib import Path
from typing import List

from .config import MPIConfig
from .flavours import FLAVOURS, Flavour
from .launch_agent import LAUNCHERS_VAR, WORLD_VAR
from .ray_internals import WORKER_NICENESS

SHIM = str(Path(__file__).with_name("shim.py"))

# Every rank runs as the launcher runs its ranks, rank 0 too. Ray would renice rank 0, a Ray worker, to
# RAY_worker_niceness (15; Ray renices no other rank) and give it OMP_NUM_THREADS = the task's CPUs (all
# of the node's slots): one rank at another priority or thread count than its peers slows every
# collective (Horovod's step: 1263 vs 18687 images/s on 2 cores). One thread per rank, as Ray gives a
# 1-CPU task, unless OMP_NUM_THREADS is set already.
RANK_ENV = {WORKER_NICENESS: "0", "OMP_NUM_THREADS": "${OMP_NUM_THREADS:-1}"}  # name: shell value


def mpirun_command(config: MPIConfig, python: str = sys.executable, dry_run: bool = False) -> List[str]:
    """`<launch shell> <launcher> <its options> <args> <python> -m raympi.runner ...`; Ray appends its worker's
    argv. `python` is Ray's `py_executable`: an interpreter, or a command that runs one. With `dry_run`, the
    launcher only checks its arguments (see Flavour.dry_run)."""
    flavour = FLAVOURS[config.flavour]
    program = [*_rank_start(config, python), flavour.name, *_expected_hosts(config), config.worker_entry]
    launcher = [flavour.find(python), *flavour.options(config, python), *config.args,
                *(flavour.dry_run(program) if dry_run else program)]
    return [*_launch_shell(flavour), *_agent_env(config), *launcher]


def _rank_start(config: MPIConfig, python: str) -> List[str]:
    """How each rank starts: a fresh interpreter, or with `preload` a shim that has it forked from a template (see
    raympi.template)."""
    if config.preload is None:
        return [*shlex.split(python), "-m", "raympi.runner"]
    return [*shlex.split(python), "-S", SHIM, python, ",".join(config.preload), "raympi.runner"]


def py_executable(mpi: dict, python: str = sys.executable) -> str:
    """The same launch as a `py_executable` runtime env value, for clusters without the plugin:
    `mpi` is what `runtime_env["mpi"]` would be."""
    return shlex.join(mpirun_command(MPIConfig.parse(mpi), python))


def _launch_shell(flavour: Flavour) -> List[str]:
    """A shell that exports RANK_ENV and the flavour's env, removes what a killed launcher of its pid left behind,
    then becomes the launcher (the same pid, as Ray expects)."""
    exports = " ".join(f'{name}="{value}"' for name, value in {**RANK_ENV, **flavour.env}.items())
    cleanup = f"LAUNCHER=$$; {flavour.leftovers}; " if flavour.leftovers else ""
    return ["/bin/sh", "-c", f'export {exports}; {cleanup}exec "$@"', "sh"]


def _agent_env(config: MPIConfig) -> List[str]:
    """The launch agent finds the daemon launchers in its environment (the launcher passes its own): PRRTE splits
    an agent's command line at spaces and colons, Hydra takes a program without arguments. Not the world's key (see
    raympi.world_key)."""
    if len(config.hosts) < 2:
        return []
    return ["env", f"{LAUNCHERS_VAR}={json.dumps(config.launchers, separators=(',', ':'))}",
            f"{WORLD_VAR}={config.world}"]


def _expected_hosts(config: MPIConfig) -> List[str]:
    """Rank 0 checks the started world against the reservation (see raympi.supervisor)."""
    return [f"--hosts={','.join(config.hosts)}"] if config.hosts else []
