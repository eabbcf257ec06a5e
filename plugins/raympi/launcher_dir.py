"""A directory for what a world's ranks on one node share by name, removed with what the flavour's launcher leaves
once that launcher (mpirun, or its daemon on that node: the ranks' parent) is gone, however it ends. A launcher
removes what its world made only when it ends by itself: Ray SIGKILLs a worker process that is still starting
(rank 0's launcher: a warm world's when the driver exits or calls ray.shutdown() right after a call), and the ranks,
which end with os._exit, remove nothing.
"""

import os
import subprocess
import sys
from typing import Collection

from .forked import launcher_pid

# Polls the launcher: a watcher outlives it by at most this much.
POLL_S = 0.2
# What a watcher keeps of the rank's environment: where its programs are, and the temporary directory that the
# flavour's leftovers name.
_WATCHER_ENV = ("PATH", "TMPDIR", "TEMP", "TMP")


class LauncherGone(RuntimeError):
    """The rank's parent is no launcher: its launcher was killed as the rank started, and its world is gone."""


def launcher_dir(parent: str, leftovers: str, launchers: Collection[str]) -> str:
    """This node's directory of the world under `parent`, named after the launcher (its pid in this PID namespace:
    nodes of one host may share `parent`). The rank that makes it starts its watcher, which then removes it and runs
    `leftovers` (see raympi.flavours.Flavour.leftovers). `launchers`: the program names of a rank's parent; under
    another (init, once orphaned) LauncherGone, as a watcher would wait for good. Not on Linux: `parent` itself."""
    if not sys.platform.startswith("linux"):  # /proc
        return parent
    launcher = launcher_pid()
    try:
        with open(f"/proc/{launcher}/comm") as comm:
            name = comm.read().strip()
    except OSError:  # gone meanwhile
        name = ""
    if name not in launchers:
        raise LauncherGone(f"this rank's parent is {name or 'gone'} (pid {launcher}), not its launcher "
                           f"({', '.join(launchers)}): the launcher was killed as the rank started")
    path = os.path.join(parent, f"raympi-{os.stat('/proc/self/ns/pid').st_ino}-{launcher}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        # A rank beside this one was first; or a launcher of the same pid before, whose watcher now waits for this one.
        return path
    watch = f'while kill -0 "$1" 2>/dev/null; do sleep {POLL_S}; done; rm -rf -- "$2"; LAUNCHER=$1; {leftovers or ":"}'
    # Orphaned at once, in a session of its own: Ray kills a worker's process group and children as it ends, and a
    # peer its descendants (raympi.peer); the watcher outlives them all. With no more of the rank's environment than
    # it uses: it is no rank (PMIX_RANK) and holds nothing of the world's.
    env = {name: os.environ[name] for name in _WATCHER_ENV if name in os.environ}
    subprocess.run(["/bin/sh", "-c", f"({watch}) </dev/null >/dev/null 2>&1 &", "sh", str(launcher), path],
                   start_new_session=True, check=True, env=env)
    return path
