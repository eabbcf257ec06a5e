"""RayMPIJob tasks run for real: flytekit local execution, an embedded Ray, mpirun, mpi4py."""

import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pandas as pd
import pytest
import ray
from flytekit import Deck, Resources, current_context, map_task, task, workflow
from flytekit.bin.entrypoint import setup_execution
from flytekit.core.base_task import IgnoreOutputs
from flytekit.core.type_engine import TypeEngine
from flytekit.types.file import FlyteFile

from conftest import recorded_pids, run_leaving_nothing, seconds_since_failure, wait_until_gone
from flytekitplugins.raympi import launch
from flytekitplugins.raympi import ActiveDeadlineExceeded, Launcher, RayMPIJob, RunPolicy, Worker
from raympi import MPIRankError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("embedded_ray")


@dataclass
class Scale:
    factor: int
    label: str


def world(workers: int = 1, slots: int = 2, **kwargs) -> RayMPIJob:
    return RayMPIJob(worker=Worker(replicas=workers), slots=slots, **kwargs)


def run_dirs(working_dir: str) -> Set[Path]:
    """What exists of the working directories of every rank of the run that `working_dir` (one rank's) belongs to,
    named raympi-rank-<run>-<rank>-<random> in the ranks' temporary directory."""
    path = Path(working_dir)
    return set(path.parent.glob(f"{path.name.rsplit('-', 2)[0]}-*"))


@pytest.fixture
def flytekit_log(caplog):
    """flytekit's logger does not propagate: hand its records to caplog."""
    logger = logging.getLogger("flytekit")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@task(task_config=world(slots=2))
def two_ranks(x: int) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce((comm.rank + 1) * x)
    return comm.gather(f"{comm.rank}/{comm.size}:{socket.gethostname()}:{os.getpid()}:{total}", root=0)


@task(task_config=world(workers=2, slots=2))
def four_ranks(x: int) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce((comm.rank + 1) * x)
    return comm.gather(f"{comm.rank}/{comm.size}:{socket.gethostname()}:{os.getpid()}:{total}", root=0)


@pytest.mark.parametrize("body, size", [(two_ranks, 2), (four_ranks, 4)])
def test_every_rank_takes_part(body, size):
    @workflow
    def wf(x: int) -> List[str]:
        return body(x=x)

    rows = [row.split(":") for row in wf(x=10)]
    assert [r[0] for r in rows] == [f"{rank}/{size}" for rank in range(size)]
    assert len({r[2] for r in rows}) == size, "each rank is its own process"
    assert {r[3] for r in rows} == {str(10 * size * (size + 1) // 2)}


@task(task_config=world(slots=3))
def ray_imported() -> List[bool]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather("ray" in sys.modules, root=0)


def test_of_fresh_ranks_only_rank0_imports_ray(monkeypatch):
    """Rank 0 is the Ray worker; Ray's import, a second of CPU, would only delay the peers' start. (Ranks forked from a
    template have it from there, at no cost.)"""
    monkeypatch.setenv("RAYMPI_TEMPLATES", "0")
    assert ray_imported() == [True, False, False]


def test_an_unknown_templates_setting_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("RAYMPI_TEMPLATES", "yes")
    with pytest.raises(ValueError, match="RAYMPI_TEMPLATES='yes': 1 forks every rank from a template process that "
                                         "imported flytekit, 0 starts every rank as a fresh interpreter"):
        ray_imported()


@task(task_config=world(slots=3))
def read_everywhere(data: FlyteFile, scale: Scale, frame: pd.DataFrame) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    with open(data) as f:
        content = f.read().strip()
    row = (f"{comm.rank}|{current_context().working_directory}|{content}|{scale.factor * comm.rank}{scale.label}"
           f"|{frame['v'].iloc[comm.rank::comm.size].sum()}")
    rows = comm.gather(row, root=0)
    if comm.rank != 0:
        raise IgnoreOutputs("only rank 0's outputs count")
    return rows


def test_inputs_of_every_kind_and_context_work_on_every_rank(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("shared input\n")

    @workflow
    def wf(data: FlyteFile, scale: Scale, frame: pd.DataFrame) -> List[str]:
        return read_everywhere(data=data, scale=scale, frame=frame)

    frame = pd.DataFrame({"v": range(9)})
    rows = [row.split("|") for row in wf(data=FlyteFile(str(source)), scale=Scale(factor=5, label="x"), frame=frame)]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert len({r[1] for r in rows}) == 3, "each rank has its own working directory"
    assert {r[2] for r in rows} == {"shared input"}
    assert [r[3] for r in rows] == ["0x", "5x", "10x"]
    assert [r[4] for r in rows] == ["9", "12", "15"], "each rank read its third of the dataframe"


@task(task_config=world(slots=2))
def write_report(name: str) -> FlyteFile:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    ranks = comm.gather(comm.rank, root=0)
    path = Path(current_context().working_directory) / f"{name}.txt"
    if comm.rank == 0:
        path.write_text(f"ranks {ranks}\n")
    return FlyteFile(str(path))


@task
def read_report(report: FlyteFile) -> str:
    with open(report) as f:
        return f.read().strip()


def test_file_output_of_rank0_reaches_downstream_tasks():
    @workflow
    def wf() -> str:
        return read_report(report=write_report(name="report"))

    assert wf() == "ranks [0, 1]"


def test_of_the_ranks_working_directories_only_the_local_outputs_stay():
    report = Path(write_report(name="kept").path)
    assert report.read_text() == "ranks [0, 1]\n"
    assert run_dirs(str(report.parent)) == {report.parent}, "the peer's directory is gone"
    assert list(report.parent.iterdir()) == [report], "rank 0's directory holds only what its outputs refer to"


@task(task_config=world(slots=2))
def live_working_dirs() -> List[str]:
    """Every rank's working directory of this run, as rank 0 finds them while they all exist."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    comm.barrier()  # every rank's directory exists
    found = sorted(str(p) for p in run_dirs(current_context().working_directory))
    comm.barrier()  # and still does while rank 0 looks
    return found


def test_a_run_whose_outputs_refer_to_no_file_leaves_no_working_directory():
    dirs = live_working_dirs()
    assert len(dirs) == 2
    assert run_dirs(dirs[0]) == set()


@task(task_config=world(slots=2))
def default_context_dirs() -> List[str]:
    """The directories that flytekit's default context works in on each rank (a new thread's context does)."""
    from flytekit.configuration import Config
    from flytekit.core import data_persistence
    from mpi4py import MPI

    return sorted(set(sum(MPI.COMM_WORLD.allgather([data_persistence.flyte_tmp_dir, Config.local_sandbox_path]), [])))


def test_ranks_forked_from_one_template_leave_flytekits_directories_to_it():
    """They share the template's: each rank removed them as it started and ended, and a rank whose thread made its
    default context as another removed them failed (FileExistsError, in the CI run of stop 38)."""
    dirs = default_context_dirs()
    assert len(dirs) == 2, f"the two ranks share their template's two: {dirs}"
    assert all(Path(d).is_dir() and Path(d).parent.parent.name.startswith("raympi-templates-") for d in dirs), dirs


@task
def plus_one(values: List[str]) -> int:
    return len(values) + 1


def test_tasks_in_sequence_with_a_regular_task_between():
    @workflow
    def wf(x: int) -> List[str]:
        first = two_ranks(x=x)
        n = plus_one(values=first)
        return four_ranks(x=n)

    assert [row.split(":")[3] for row in wf(x=1)] == ["30"] * 4


@task(task_config=world(slots=3))
def failing(mode: str, failing_rank: int, pids_file: str) -> int:
    from mpi4py import MPI

    sys.path.insert(0, str(Path(__file__).parent))
    import mpi_entries

    comm = MPI.COMM_WORLD
    mpi_entries.record_pids(pids_file)
    with open(f"{pids_file}.dirs", "a") as f:
        f.write(f"{current_context().working_directory}\n")
    comm.barrier()  # every rank is on record before any fails
    if comm.rank == failing_rank:
        mpi_entries.fail(mode, pids_file)
    comm.barrier()
    return comm.rank


def run_failing(tmp_path, mode: str, failing_rank: int, error_type):
    pids_file = tmp_path / "pids"
    with pytest.raises(error_type) as caught:
        failing(mode=mode, failing_rank=failing_rank, pids_file=str(pids_file))
    elapsed = seconds_since_failure(pids_file)
    assert elapsed < 30, f"the failure took {elapsed:.0f} s to reach the caller"
    assert wait_until_gone(recorded_pids(pids_file)) == set(), "MPI processes outlived the failed task"
    assert left_working_dirs(pids_file) == set()
    return caught.value


def left_working_dirs(pids_file: Path) -> Set[Path]:
    """What exists of the ranks' working directories of the run that wrote `pids_file` (three ranks)."""
    dirs = Path(f"{pids_file}.dirs").read_text().split()
    assert len(dirs) == 3, dirs
    return set().union(*(run_dirs(d) for d in dirs))


def test_peer_that_raises_fails_the_task_naming_the_rank(tmp_path):
    error = run_failing(tmp_path, "raise", 2, MPIRankError)
    assert error.rank == 2
    assert "raised ValueError: rank 2 was told to fail" in str(error)
    assert "Traceback" in str(error)


def test_rank0_that_raises_fails_the_task_with_its_exception(tmp_path):
    error = run_failing(tmp_path, "raise", 0, ValueError)
    assert "rank 0 was told to fail" in str(error)


@pytest.mark.parametrize("limit, message", [
    ({"task_config": world(slots=3, run_policy=RunPolicy(active_deadline_seconds=40))},
     "run_policy.active_deadline_seconds=40 s"),
    ({"task_config": world(slots=3), "timeout": 40}, "longer than timeout=40 s"),
])
def test_a_hung_rank_is_stopped_at_the_deadline(tmp_path, limit, message):
    # 40 s: long enough for the world to start on a loaded 2-core machine, so that a rank really hangs.
    hung = task(**limit)(failing.task_function)
    pids_file = tmp_path / "pids"
    start = time.monotonic()
    with pytest.raises(ActiveDeadlineExceeded, match=message):
        hung(mode="hang", failing_rank=1, pids_file=str(pids_file))
    assert time.monotonic() - start >= 40
    # The deadline runs from the launch, before the world started and rank 1 hung (Ray's start excluded).
    assert seconds_since_failure(pids_file) < 40 + 15
    assert len(recorded_pids(pids_file)) == 4, "three ranks and their mpirun were running"
    assert wait_until_gone(recorded_pids(pids_file)) == set()
    assert left_working_dirs(pids_file) == set()


def test_peer_output_is_in_the_task_log_with_rank_tags(capfd):
    @task(task_config=world(slots=2))
    def speak() -> int:
        from mpi4py import MPI

        print(f"speaking from rank {MPI.COMM_WORLD.rank}", flush=True)
        MPI.COMM_WORLD.barrier()
        return 0

    speak()
    assert "[rank 1] speaking from rank 1" in logged_until(capfd, "[rank 1] speaking from rank 1")


def logged_until(capfd, text: str, within: float = 15.0) -> str:
    """What the task logged until `text` (Ray forwards its workers' output to the driver's as it comes)."""
    deadline, seen = time.monotonic() + within, ""
    while text not in seen and time.monotonic() < deadline:
        time.sleep(0.5)
        captured = capfd.readouterr()
        seen += captured.out + captured.err
    return seen


@task(task_config=world(slots=2))
def world_of(x: int) -> str:
    from mpi4py import MPI

    return f"{x} {MPI.COMM_WORLD.allreduce(1)} {os.getpid()}"


def test_each_element_of_a_map_task_runs_as_a_world_of_its_own():
    rows = [row.split() for row in map_task(world_of)(x=[1, 2, 3])]
    assert [row[:2] for row in rows] == [["1", "2"], ["2", "2"], ["3", "2"]], "each element: its input, 2 ranks"
    assert len({row[2] for row in rows}) == 3 and str(os.getpid()) not in {row[2] for row in rows}, \
        "each in a world of its own, none in the driver"


# A child that outlives its rank by this much: the end of a rank once waited up to 10 s per stream for the pipes
# its children hold (20 s in all), so its children slept out before the call returned (and wrote down that they had).
CHILD_S = 18


@task(task_config=world(slots=3))
def ranks_with_children(pids: str) -> int:
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.rank
    child = subprocess.Popen(["sh", "-c", f"echo child of rank {rank} started; sleep {CHILD_S}; "  # our stdout
                                          f"echo {rank} >> {pids}.slept"])
    with open(pids, "a") as f:
        f.write(f"{rank} {child.pid}\n")
    MPI.COMM_WORLD.barrier()
    return rank


def test_a_rank_ends_without_waiting_for_its_childrens_output_which_still_reaches_the_log(tmp_path, capfd):
    pids = tmp_path / "pids"
    assert ranks_with_children(pids=str(pids)) == 0
    children = {int(rank): int(pid) for rank, pid in map(str.split, pids.read_text().splitlines())}
    seen = logged_until(capfd, "[rank 2] child of rank 2 started")  # on our stdout, inherited
    assert "[rank 1] child of rank 1 started" in seen and "[rank 2] child of rank 2 started" in seen
    assert wait_until_gone(children.values(), within=10) == set(), "the world's end ended the ranks' children"
    assert not Path(f"{pids}.slept").exists(), "the call waited for the ranks' children, which slept out"


def test_pyflyte_run_of_the_flagship_example():
    result = subprocess.run(
        [Path(sys.executable).with_name("pyflyte"), "run", "examples/pi.py", "pi_workflow", "--samples", "20000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(4):
        assert f"rank {rank} of 4" in result.stdout
    pi = float(re.search(r"o0=([0-9.]+)", result.stdout).group(1))
    assert abs(pi - 3.1416) < 0.05


TOP_LEVEL_MPI4PY = """
from mpi4py import MPI
from flytekit import task
from flytekitplugins.raympi import RayMPIJob, Worker


@task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
def size() -> int:
    return MPI.COMM_WORLD.allreduce(1)


print(size())
"""


def test_a_task_module_importing_mpi4py_at_its_top_runs_and_its_driver_says_to_move_it_leaving_nothing(tmp_path):
    """The driver imports the task's module: there `from mpi4py import MPI` makes it an MPI world of its own (a
    singleton), whose shared memory Open MPI would leave in /dev/shm."""
    (tmp_path / "wf.py").write_text(TOP_LEVEL_MPI4PY)
    done = run_leaving_nothing([sys.executable, "wf.py"], tmp_path, os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "2"
    assert "import mpi4py inside the task's function" in " ".join(done.stdout.split()), "flytekit logs to stdout"


@task(task_config=world(slots=2))
def cpu_then_gpu_probe() -> List[str]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(os.environ.get("CUDA_VISIBLE_DEVICES", "none"), root=0)


@task(task_config=RayMPIJob(worker=Worker(requests=Resources(gpu="2")), slots=2, placement_timeout_seconds=30))
def gpu_probe() -> List[str]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(os.environ.get("CUDA_VISIBLE_DEVICES", "none"), root=0)


@task(task_config=RayMPIJob(worker=Worker(replicas=2, requests=Resources(gpu="1")), slots=1))
def two_workers_gpu_probe() -> List[str]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(os.environ.get("CUDA_VISIBLE_DEVICES", "none"), root=0)


def test_a_gpu_task_after_a_cpu_task_gets_an_embedded_ray_with_gpus(flytekit_log):
    ray.shutdown()  # this test's first task starts the embedded Ray, without GPUs
    assert cpu_then_gpu_probe() == ["none", "none"]
    assert gpu_probe() == ["0,1", "0,1"], "each rank sees the world's 2 GPUs"
    assert two_workers_gpu_probe() == ["0,1", "0,1"], "every worker's rank sees the GPUs reserved on the node"
    assert re.search(r"restarting the embedded Ray: the task needs 2 GPUs, it has \d+ CPUs and 0 GPUs",
                     flytekit_log.text)


OTHER_RAY = """
import signal, sys, ray, raympi
raympi.init_ray(address="local", num_cpus=2, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through ray.shutdown(), which stops this Ray
signal.pause()
"""


@pytest.fixture
def other_ray():
    """The address of a second local Ray, a cluster that a task's `address` can name."""
    process = subprocess.Popen([sys.executable, "-c", OTHER_RAY], stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=60)


def rank0_ray() -> str:
    """The address of the Ray cluster that rank 0 (a Ray worker) belongs to."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank:
        raise IgnoreOutputs("rank 0 answers")
    return ray.get_runtime_context().gcs_address


def test_a_task_runs_on_the_ray_its_address_names_whatever_ray_ran_the_task_before(other_ray, flytekit_log):
    assert re.fullmatch(r"[\d.]+:\d+", other_ray), other_ray
    embedded = task(task_config=world(slots=2))(rank0_ray)
    elsewhere = task(task_config=world(slots=2, address=other_ray))(rank0_ray)
    assert embedded() != other_ray
    assert elsewhere() == other_ray
    assert f"leaving the embedded Ray for {other_ray} (the task's address)" in flytekit_log.text
    assert embedded() != other_ray, "a task without an address runs on an embedded Ray again"


def test_a_ray_the_caller_connected_to_is_kept_whatever_spelling_of_its_address_the_task_uses(other_ray,
                                                                                              flytekit_log):
    port = other_ray.rsplit(":", 1)[1]
    ray.shutdown()  # this module's embedded Ray, if an earlier test started it
    ray.init(address=other_ray)
    try:
        the_callers = ray.put("the caller's object")
        for address in (f"localhost:{port}", f"127.0.0.1:{port}", "auto"):
            assert task(task_config=world(slots=2, address=address))(rank0_ray)() == other_ray
            assert ray.get(the_callers) == "the caller's object", f"the caller's Ray was left for {address}"
        assert "leaving" not in flytekit_log.text
        assert not launch._names(f"localhost:{int(port) + 1}", other_ray), "another port is another Ray"
    finally:
        ray.shutdown()


@pytest.mark.parametrize("field", ["requests", "limits"])
def test_a_request_limit_pair_fails_at_decoration_naming_the_field_and_the_fix(field):
    with pytest.raises(ValueError, match=re.escape(
            f"worker.{field}.cpu=('1', '2'): a (request, limit) pair is not supported here; "
            "give the request in requests=Resources(cpu='1') and the limit in limits=Resources(cpu='2')")):
        task(task_config=RayMPIJob(worker=Worker(**{field: Resources(cpu=("1", "2"))})))(rank0_ray)
    with pytest.raises(ValueError, match=re.escape("launcher.requests.gpu=(1, 1): a (request, limit) pair")):
        RayMPIJob(launcher=Launcher(requests=Resources(gpu=(1, 1))))


@task(task_config=world(slots=2), enable_deck=True)
def train(epochs: int, preempted_after: int) -> List[str]:
    """Resumes at the epoch the previous attempt's checkpoint names, checkpoints after each epoch (rank 0), and is
    preempted (rank 0 raises) after `preempted_after` epochs; every rank says where it resumed and what saving
    the checkpoint itself gave; rank 0's deck says where it resumed."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    checkpoint = current_context().checkpoint
    start = int(checkpoint.read() or 0)
    Deck("progress", f"rank {comm.rank} resumed at {start}")
    saving = "saved"
    if comm.rank:
        try:
            checkpoint.write(b"from a peer")
        except RuntimeError as refused:
            saving = str(refused)
    for epoch in range(start, epochs):
        if epoch - start == preempted_after and comm.rank == 0:
            raise RuntimeError(f"preempted after epoch {epoch}")
        if comm.rank == 0:
            checkpoint.write(str(epoch + 1).encode())
        comm.barrier()
    return comm.gather(f"rank {comm.rank} resumed at {start}, {current_context().output_metadata_prefix}: {saving}",
                       root=0)


def attempt(tmp_path: Path, number: int, **inputs) -> Tuple[List[str], Dict[str, str]]:
    """`train` run as flytekit's entrypoint runs attempt `number` of a task (a retry's checkpoint source is the
    previous attempt's destination): its output, and the decks the entrypoint would write ({name: html})."""
    previous = str(tmp_path / f"checkpoint-{number - 1}") if number > 1 else None
    with setup_execution(raw_output_data_prefix=str(tmp_path / f"raw-{number}"),
                         output_metadata_prefix=str(tmp_path / f"metadata-{number}"),
                         checkpoint_path=str(tmp_path / f"checkpoint-{number}"), prev_checkpoint=previous) as ctx:
        literals = TypeEngine.dict_to_literal_map(ctx, inputs, train.python_interface.inputs)
        outputs = train.dispatch_execute(ctx, literals)
        rows = TypeEngine.literal_map_to_kwargs(ctx, outputs, train.python_interface.outputs)["o0"]
        return rows, {deck.name: deck.html for deck in ctx.user_space_params.decks}


def test_a_retry_resumes_from_the_checkpoint_rank0_saved_before_it_was_preempted(tmp_path):
    with pytest.raises(Exception, match="preempted after epoch 2"):
        attempt(tmp_path, 1, epochs=4, preempted_after=2)
    assert (tmp_path / "checkpoint-1" / "_dst_cp").read_text() == "2"
    rows, decks = attempt(tmp_path, 2, epochs=4, preempted_after=-1)
    metadata = tmp_path / "metadata-2"
    assert rows == [f"rank 0 resumed at 2, {metadata}: saved",
                    f"rank 1 resumed at 2, {metadata}: MPI rank 1 cannot save the task's checkpoint: rank 0 saves it "
                    "(e.g. `if comm.rank == 0: checkpoint.save(...)`); every rank can restore it"]
    assert (tmp_path / "checkpoint-2" / "_dst_cp").read_text() == "4"
    assert decks["progress"] == "rank 0 resumed at 2", "rank 0's deck is the task's"


def test_a_local_runs_one_deck_file_holds_rank0s_decks_and_is_named_at_the_default_log_level(flytekit_log):
    @task(task_config=world(slots=2), enable_deck=True)
    def decked() -> int:
        from mpi4py import MPI

        Deck("ranks", f"rank {MPI.COMM_WORLD.rank} of {MPI.COMM_WORLD.size}")
        return MPI.COMM_WORLD.rank

    assert decked() == 0
    written = re.findall(r"decked: the task's decks \(the MPI world's among them\) are in file://(\S+)",
                         flytekit_log.text)
    assert len(written) == 1, flytekit_log.text[-3000:]
    assert "rank 0 of 2" in Path(written[0]).read_text()
