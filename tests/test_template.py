"""Ranks forked from a template (raympi.template) through the shim a launcher starts (raympi.shim): a real template
and real shims, started here as a launcher starts a rank (`python -S shim.py <python> <preload> <module> <args>`).
The template's raylet is a process of this test's, so that it can end it. Each flavour's ranks forked from templates
under Ray and a launcher: tests/test_flavours.py."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import procinfo
from conftest import TESTS_DIR, processes_naming, wait_until_gone
from raympi.command import SHIM
from raympi.shim import WAIT_S


class Node:
    """Where ranks start: a temporary directory (TMPDIR, and the home of a module that changes) and a raylet."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="tpl-", dir="/tmp"))  # short: a socket's path is at most 107 bytes
        self.templates = self.tmp / f"raympi-templates-{os.getuid()}"
        (self.tmp / "changing.py").write_text("VALUE = 1\n")
        self.raylet = subprocess.Popen(["sleep", "3600"])
        self.env = {**os.environ, "TMPDIR": str(self.tmp), "RAY_RAYLET_PID": str(self.raylet.pid),
                    "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{self.tmp}"}
        self._reports = 0

    def shim(self, *argv, preload: str = "", env=(), **popen) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-S", SHIM, sys.executable, preload, "template_entries", *argv],
                                env={**self.env, **dict(env)}, **popen)

    def report(self, cwd: Path = None, env=(), cpus=None, umask: int = 0o022, preload: str = "") -> dict:
        """template_entries.report's, checking what it wrote to stdout and to a descriptor the shim was given."""
        self._reports += 1
        out = self.tmp / f"report-{self._reports}.json"
        read_end, write_end = os.pipe()

        def as_a_launcher_starts_it():
            os.umask(umask)
            if cpus:
                os.sched_setaffinity(0, cpus)

        shim = self.shim("report", str(out), str(write_end), preload=preload, env=env,
                         pass_fds=(write_end,), preexec_fn=as_a_launcher_starts_it, cwd=cwd or self.tmp,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(write_end)
        stdout, stderr = shim.communicate(timeout=60)
        with os.fdopen(read_end, "rb") as extra:
            assert extra.read() == b"through the extra descriptor"
        assert shim.returncode == 0, stderr
        assert stdout == "on stdout\n"
        self.stderr = stderr
        return json.loads(out.read_text())

    def socket(self) -> Path:
        """The template's socket, once it listens (its imports done)."""
        deadline = time.monotonic() + 60
        while not (found := list(self.templates.glob("*.sock"))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert found, f"no template listens: {[p.name for p in self.templates.iterdir()]}"
        return found[0]

    def template_pids(self) -> set:
        return processes_naming(f"-m raympi.template {self.templates}")

    def waiting_rank(self, handle: bool = False):
        """A shim whose rank waits (on SIGTERM, with `handle`, it says so and exits 3), and the rank's pid."""
        return self.waiting_ranks(1, handle)[0]

    def waiting_ranks(self, n: int, handle: bool = False) -> list:
        """`n` shims started together, each with its rank's pid, once each rank waits (see waiting_rank)."""
        pid_files = [self.tmp / f"wait-{time.monotonic_ns()}-{i}" for i in range(n)]
        shims = [self.shim("wait", str(pid_file), "yes" if handle else "no") for pid_file in pid_files]
        deadline = time.monotonic() + 60
        while not all(p.exists() and p.read_text() for p in pid_files) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(shim, int(pid_file.read_text()), pid_file) for shim, pid_file in zip(shims, pid_files)]

    def end(self) -> set:
        """End the raylet; the templates still running after 15 s."""
        self.raylet.kill()
        self.raylet.wait()
        return wait_until_gone(self.template_pids())


@pytest.fixture
def node():
    node = Node()
    yield node
    assert node.end() == set(), "a template outlived its raylet"
    shutil.rmtree(node.tmp, ignore_errors=True)


def test_ranks_fork_from_the_template_the_first_one_started_given_all_its_shim_was_given(node):
    ranks = node.waiting_ranks(3)  # started together: one starts the template, all wait for it
    parents = {procinfo.parent(rank) for _, rank, _ in ranks}
    assert len(parents) == 1 and parents < node.template_pids(), "all forked by one template"
    assert node.report()["forked"]
    template = node.socket()
    (node.tmp / "changing.py").write_text("VALUE = 2\n")
    elsewhere = node.tmp / "elsewhere"
    elsewhere.mkdir()
    second = node.report(cwd=elsewhere, env={"OMPI_TEST_WORLD": "7"}, cpus={0}, umask=0o027)
    assert second["forked"], "the template forked it"
    assert second["launcher"] == os.getpid(), "its launcher is its shim's parent"
    assert second["pgid"] not in (os.getpgid(0), *node.template_pids()), "a process group of its own"
    assert (second["cwd"], second["argv"][0], second["world"]) == (str(elsewhere), "report", "7")
    assert (second["cpus"], second["umask"]) == ([0], 0o027), "as the launcher set up its shim"
    assert second["value"] == 2, "a module changed since the template started is imported anew"
    assert list(node.templates.glob("*.sock")) == [template], "one template for every world's ranks"
    for shim, _, _ in ranks:
        shim.kill()


def test_a_variable_the_templates_imports_set_reaches_its_ranks_unless_their_own_environment_sets_it(node):
    """As a fresh rank's imports would set it: mpi4py sets FI_PROVIDER_PATH for Intel MPI's libfabric, unless set."""
    (node.tmp / "sets_env.py").write_text("import os\nos.environ.setdefault('I_MPI_SET_BY_IMPORT', 'imported')\n")
    assert node.report(preload="sets_env")["set_by_import"] == "imported"
    assert node.report(preload="sets_env", env={"I_MPI_SET_BY_IMPORT": "own"})["set_by_import"] == "own"
    assert len(node.template_pids()) == 1, "one template forked both (I_MPI_* is not in its key)"


def test_what_the_templates_imports_make_in_the_temporary_directory_is_its_own_and_goes_with_it(node):
    """flytekit makes two directories as it is imported: every rank forked from the template shares them, so no rank
    removes them (flytekitplugins.raympi.flytekit_internals, 6); the template does as it ends."""
    (node.tmp / "makes_tmp.py").write_text("import tempfile\nMADE = tempfile.mkdtemp(prefix='made-')\n")
    report = node.report(preload="makes_tmp")
    made = Path(report["made_by_import"])
    assert made.is_dir() and made.parent.parent == node.templates, "in the template's own directory"
    assert report["tmp"] == str(node.tmp), "a rank's own temporary directory is its TMPDIR, as a fresh rank's"
    assert node.end() == set()
    assert list(node.templates.iterdir()) == []


def test_what_a_launcher_sets_for_each_world_is_not_in_the_templates_key(node):
    """Open MPI's, PMIx's, Hydra's variables, and the launch agent's of a world on several nodes (raympi.shim.PER_WORLD)
    differ between worlds: one template forks every world's ranks. So do the library paths of a rank that mpirun
    started and of one that Open MPI's daemon on another node started (measured on the namespace cluster: a node
    had a template for either, as rank 0's node or not)."""
    lib = f"{sys.prefix}/lib"
    by_mpirun = {"LD_LIBRARY_PATH": f"{lib}:{lib}:{lib}"}
    by_its_daemon = {"LD_LIBRARY_PATH": f"{lib}:{lib}:{lib}:{lib}:", "DYLD_LIBRARY_PATH": f"{lib}:{lib}:"}
    for world, library_paths in (("1", by_mpirun), ("2", by_its_daemon)):
        assert node.report(env={"OMPI_TEST_WORLD": world, "PMIX_RANK": "0", "RAYMPI_WORLD": world * 32,
                                "RAYMPI_LAUNCHERS": f'{{"10.0.0.{world}": 4{world}}}', **library_paths})["forked"]
    assert len(node.template_pids()) == 1
    assert node.report(env={"LD_LIBRARY_PATH": f"{node.tmp}:{lib}"})["forked"]
    assert len(node.template_pids()) == 2, "another search path: another template"


def test_what_killed_templates_left_is_removed_by_the_next_template(node):
    """A PID namespace or a container ends its processes with SIGKILL: a template then removes nothing."""
    node.templates.mkdir(mode=0o700)
    for suffix in (".sock", ".lock", ".log"):
        (node.templates / f"killed{suffix}").touch()
    (node.templates / "killed.tmp" / "made-by-an-import").mkdir(parents=True)
    (node.templates / "failed.log").write_text("why it could not start")
    node.report()
    deadline = time.monotonic() + 60
    while list(node.templates.glob("killed.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(node.templates.glob("killed.*")), "the killed template's files"
    node.socket()
    assert node.report()["forked"], "the template that removed them serves"
    assert (node.templates / "failed.log").exists(), "a log that tells shims not to start another"


def test_a_killed_template_is_replaced_by_the_next_rank_even_if_its_imports_warned(node):
    """What an import writes to the template's stderr (its log) is not why it could not start."""
    (node.tmp / "warns.py").write_text("import sys\nprint('a warning', file=sys.stderr)\n")
    assert node.report(preload="warns")["forked"]
    (template,) = node.template_pids()
    os.kill(template, signal.SIGKILL)
    assert wait_until_gone({template}) == set()
    assert node.report(preload="warns")["forked"], "the next rank started another and forked from it"
    assert node.template_pids() - {template}


def test_the_shim_exits_as_its_rank_does_and_passes_signals_on(node):
    node.report()
    node.socket()
    assert node.shim("exit", "7").wait(timeout=60) == 7
    for handle, status in ((True, 3), (False, -signal.SIGTERM)):
        shim, rank, pid_file = node.waiting_rank(handle)
        assert procinfo.parent(rank) in node.template_pids(), "forked"
        shim.send_signal(signal.SIGTERM)
        assert shim.wait(timeout=60) == status
        assert pid_file.read_text().endswith(" term") == handle


def test_a_killed_shim_takes_its_rank_with_it(node):
    node.report()
    node.socket()
    shim, rank, _ = node.waiting_rank()
    shim.kill()
    shim.wait()
    assert wait_until_gone({rank}) == set()
    assert node.template_pids(), "the template serves on"


def test_the_template_ends_with_its_raylet_taking_its_ranks_and_files_with_it(node):
    node.report()
    node.socket()
    shim, rank, _ = node.waiting_rank()
    assert node.end() == set()
    assert wait_until_gone({rank}) == set()
    assert shim.wait(timeout=30) != 0, "its shim says the rank ended"
    assert list(node.templates.iterdir()) == [], "socket, lock and log removed"


@pytest.mark.parametrize("preload, why", [("no_such_module", "No module named 'no_such_module'"),
                                          ("threaded", "started 1 thread(s): ranks forked from this process would "
                                                       "lack them; leave the module that starts them out")],
                         ids=["a module that does not import", "a module that starts a thread"])
def test_a_template_that_cannot_start_is_not_started_again_and_ranks_say_so(node, preload, why):
    (node.tmp / "threaded.py").write_text("import threading, time\n"
                                          "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    assert not node.report(preload=preload)["forked"], "its rank waited for it, then started without it"
    logs = [p for p in node.templates.glob("*.log") if p.stat().st_size]
    assert logs and why in logs[0].read_text()
    assert not node.report(preload=preload)["forked"]
    assert f"this rank starts without a template: the last one could not start ({logs[0]})" in node.stderr
    assert wait_until_gone(node.template_pids()) == set(), "it ended"


def test_a_rank_whose_template_does_not_listen_in_time_starts_without_it_and_the_template_serves_later_ranks(node):
    """A template still importing after WAIT_S (a slow file system, a large preload)."""
    (node.tmp / "slow.py").write_text(f"import time\ntime.sleep({WAIT_S + 5})\n")
    started = time.monotonic()
    assert not node.report(preload="slow")["forked"], "it started without the template"
    assert time.monotonic() - started >= WAIT_S
    assert f"this rank starts without a template: none listened within {WAIT_S:.0f} s" in node.stderr
    assert node.report(preload="slow")["forked"], "the next rank waited for the template, still starting, to listen"


def test_a_stranger_cannot_have_a_rank_forked(node):
    """Another user reaches no template: the directory is its user's alone, and the template checks the peer's user
    (SO_PEERCRED) before it reads a byte."""
    node.report()
    path = node.socket()
    out = node.tmp / "stranger.json"
    assert _as_uid_1000(path, out) == "PermissionError"
    for opened, mode in ((node.tmp, 0o777), (node.templates, 0o755), (path, 0o777)):
        os.chmod(opened, mode)
    before = node.template_pids()
    assert _as_uid_1000(path, out) == "closed", "the template hung up on it"
    assert node.template_pids() == before and not out.exists()


def _as_uid_1000(path: Path, out: Path) -> str:
    """What a process of uid 1000 got asking the template at `path` for a rank: PermissionError, or "closed"."""
    request = {"module": "template_entries", "argv": ["report", str(out)], "env": {}, "cwd": "/",
               "launcher": 1, "fds": [], "affinity": [0], "umask": 0o022}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # as uid 1000, with this interpreter's modules loaded: its own may lie where uid 1000 cannot read
        try:
            os.setgid(1000)
            os.setuid(1000)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as template:
                template.connect(str(path))
                template.send(json.dumps(request).encode())
                said = "closed" if template.recv(1024) == b"" else "answered"
        except (ConnectionResetError, BrokenPipeError):
            said = "closed"
        except OSError as error:
            said = type(error).__name__
        os.write(write_end, said.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as said:
        return said.read()
