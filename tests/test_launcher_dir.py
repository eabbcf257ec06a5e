"""raympi.launcher_dir: a directory of a world's ranks on a node, removed with what the launcher leaves once the
launcher is gone, however it ends; here a launcher killed as Ray kills a worker process (SIGKILL to its group)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import command_line, processes_naming, wait_until_gone

# A launcher whose two children, its ranks, each ask for the directory (naming as the launcher's program its own, or
# the name given), write it as one line in one write (print writes the line's end apart when unbuffered) and wait.
LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    parent, leftovers, named = sys.argv[1:]
    launcher = open("/proc/self/comm").read().strip() if named == "launcher" else named
    rank = ("import os, sys, time; from raympi.launcher_dir import launcher_dir; "
            "path = launcher_dir(sys.argv[1], sys.argv[2], [sys.argv[3]]); "
            "os.write(1, (path + os.linesep).encode()); time.sleep(600)")
    ranks = [subprocess.Popen([sys.executable, "-c", rank, parent, leftovers, launcher]) for _ in range(2)]
    [r.wait() for r in ranks]
""")


def start(tmp_path, named: str):
    """The launcher, in a process group of its own as Ray starts a worker, and the paths its ranks got."""
    leftovers = f'touch "{tmp_path}/left-by.$LAUNCHER"'
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), leftovers, named],
                                stdout=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "PMIX_RANK": "0", "WORLD_SECRET": "s3cret"})  # as mpirun's ranks
    return launcher, {launcher.stdout.readline().strip() for _ in range(2)}


def watchers_of(path: str) -> set:
    return {pid for pid in processes_naming(path) if "kill -0" in command_line(pid)}


def test_the_directory_and_the_launchers_leftovers_go_once_a_killed_launcher_is_gone(tmp_path):
    launcher, paths = start(tmp_path, named="launcher")
    assert len(paths) == 1, "both ranks of the node share one directory"
    (path,) = paths
    assert os.path.basename(path).endswith(f"-{launcher.pid}") and os.path.isdir(path)
    time.sleep(1)
    assert os.path.isdir(path) and not (tmp_path / f"left-by.{launcher.pid}").exists(), "kept while it runs"
    (watcher,) = watchers_of(path)
    assert os.getpgid(watcher) != launcher.pid, "one watcher, out of the launcher's process group"
    with open(f"/proc/{watcher}/environ", "rb") as environ:
        names = {var.split(b"=")[0].decode() for var in environ.read().split(b"\0") if var}
    assert names <= {"PATH", "TMPDIR", "TEMP", "TMP", "PWD", "SHLVL", "_"}, "no rank (PMIX_RANK), no world's secret"

    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and its ranks, not the watcher
    launcher.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(path)
    assert (tmp_path / f"left-by.{launcher.pid}").exists(), "the launcher's leftovers were removed"
    assert wait_until_gone([watcher], within=5) == set(), "the watcher ended"


def test_a_rank_whose_parent_is_no_launcher_is_told_its_launcher_is_gone_and_starts_no_watcher(tmp_path):
    """An orphaned rank (its launcher killed as it started) has init for a parent, which a watcher would wait for
    for good; the rank exits (raympi.runner) before MPI_Init would make its shared memory."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), "true", "no-such-launcher"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, stderr = launcher.communicate(timeout=60)
    assert stderr.count("LauncherGone: this rank's parent is python") == 2, stderr
    assert "not its launcher (no-such-launcher)" in stderr
    assert watchers_of(str(tmp_path)) == set() and list(tmp_path.iterdir()) == []
