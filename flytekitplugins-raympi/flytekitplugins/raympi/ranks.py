"""What the ranks of a RayMPIJob run: rank 0 (a Ray task in the MPI world) shares the driver's assignment with the
peers and runs its rank 0 part, which produces the task's outputs; ranks 1..N-1 run the same function on the same
inputs, each in a context of its own, and their return values are discarded.

An assignment is what either Flyte SDK makes of a call (here flytekit's; flyteplugins.raympi's for Flyte 2): a
picklable object with `run_id` and `driver_node`, whose `rank0(observed)` returns a Rank0Result and `peer(rank)`
runs a peer."""

import functools
import glob
import io
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import cloudpickle
from flyteidl.core import literals_pb2
from flytekit import PythonFunctionTask, logger
from flytekit.core.base_task import IgnoreOutputs
from flytekit.core.checkpointer import SyncCheckpoint
from flytekit.core.context_manager import ExecutionParameters, ExecutionState, FlyteContextManager
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from raympi import world
from raympi.forked import launcher_pid

from . import blobs
from .flytekit_internals import move_scratch, remove_flytekit_tmp_dirs, run_as_flytekit

PEER_ENTRY = f"{__name__}.run_peer"
WORKING_DIR_PREFIX = "raympi-rank-"
# How often an idle peer looks whether rank 0 has its call.
IDLE_POLL_S = 0.005
# How much of each rank's output the "MPI world" deck shows (its end).
DECK_OUTPUT_CHARS = 64 * 1024
# Environment variables that name the accelerators a process sees (CUDA_VISIBLE_DEVICES, ...).
ACCELERATOR_VARS = ("_VISIBLE_DEVICES", "_VISIBLE_CORES", "_VISIBLE_CHIPS")


@dataclass
class Assignment:
    """Everything a rank needs to run a flytekit task, from the driver, as the driver's context had it."""

    task: PythonFunctionTask
    inputs: bytes  # a serialized flyteidl LiteralMap
    raw_output_prefix: str
    output_metadata_prefix: Optional[str]
    checkpoint: Optional[Tuple[str, Optional[str]]]  # the attempt's (destination, previous attempt's destination)
    mode: ExecutionState.Mode
    execution_id: Any
    task_id: Any
    driver_node: str  # Ray node ID of the driver
    run_id: str  # in the name of every rank's working directory: see remove_working_dirs

    def rank0(self, observed: bool) -> "Rank0Result":
        """Run the task as flytekit would and produce its outputs (written under the raw output prefix from this
        node) as a serialized LiteralMap; in a local run on another node than the driver's the local files they refer
        to (see blobs.py); its decks ({name: html}) and, for a task with decks, the world's ranks."""
        import ray

        kept: Set[str] = set()
        with rank_context(self, 0, kept) as ctx:
            if observed:
                report_for_deck()
            outputs = literals_to_bytes(run_as_flytekit(self.task, ctx, literals_from_bytes(self.inputs)))
            ranks = observed_result(observed)
            decks = {deck.name: deck.html for deck in ctx.user_space_params.decks}
            files = {}
            if ctx.execution_state.is_local_execution():
                if ray.get_runtime_context().get_node_id() != self.driver_node:
                    files = blobs.pack(outputs)
                else:  # a local run's file outputs stay where rank 0 wrote them, as in flytekit's own local runs
                    kept.update(blobs.local_paths(outputs))
            return outputs, files, decks, ranks

    def peer(self, rank: int) -> None:
        """Run the same function on the same inputs as rank 0, discarding what it returns."""
        task = self.task
        with rank_context(self, rank, kept=set()) as ctx:
            inputs = TypeEngine.literal_map_to_kwargs(ctx, literals_from_bytes(self.inputs),
                                                      task.python_interface.inputs)
            if task.enable_deck:
                report_for_deck()
            try:
                task.execute(**inputs)
            except IgnoreOutputs:
                logger.debug("rank %d ignores its outputs", rank)


def literals_to_bytes(literals: LiteralMap) -> bytes:
    return literals.to_flyte_idl().SerializeToString()


def literals_from_bytes(data: bytes) -> LiteralMap:
    return LiteralMap.from_flyte_idl(literals_pb2.LiteralMap.FromString(data))


# What rank 0 returns: outputs, files, decks, ranks (see run_rank0).
Rank0Result = Tuple[bytes, Dict[str, bytes], Dict[str, str], Optional[List[dict]]]


def _leaving_no_flytekit_dirs(rank_entry):
    """`rank_entry`, removing the directories that flytekit made for this process's default context, as it imported
    and then in each new thread (rank 0's body runs on one): a rank works in a directory of its own (rank_context).
    Removed as the rank starts too, so that a rank killed while it waited for its call leaves none. A rank forked
    from a template removes none: they are the template's, in use by every rank forked from it (raympi.template)."""

    @functools.wraps(rank_entry)
    def run(*args, **kwargs):
        remove_flytekit_tmp_dirs()
        try:
            return rank_entry(*args, **kwargs)
        finally:
            remove_flytekit_tmp_dirs()

    return run


@_leaving_no_flytekit_dirs
def run_rank0(sys_path: List[str], payload: bytes, observed: bool) -> Rank0Result:
    """The Ray task that is rank 0: share the assignment with the peers and run its rank 0 (see Assignment.rank0).

    `payload` is the pickled assignment; `sys_path` is where the driver found the task's module
    (`pyflyte run wf.py` imports wf from a path only the driver's sys.path has); `observed`: the task has decks,
    told apart from the payload so that the world keeps its ranks' output before any peer can run (or fail)."""
    from mpi4py import MPI

    from raympi import mpi_init

    mpi_init()
    if observed:
        world.keep_output(DECK_OUTPUT_CHARS)
    MPI.COMM_WORLD.Ibarrier().Wait()  # see _wait_for_the_call
    return _load(MPI.COMM_WORLD.bcast((sys_path, payload), root=0)).rank0(observed)


@_leaving_no_flytekit_dirs
def run_peer() -> None:
    """The worker entry of ranks 1..N-1."""
    from mpi4py import MPI

    _wait_for_the_call(MPI.COMM_WORLD)
    _load(MPI.COMM_WORLD.bcast(None, root=0)).peer(MPI.COMM_WORLD.rank)


def observed_result(observed: bool) -> Optional[List[dict]]:
    """What rank 0 returns of the world, once its body ended: its ranks (raympi.world.view) if `observed`."""
    if not observed:
        return None
    world.mark("ended")
    return world.view(wait_for_peers=True)


class World:
    """An MPI world started ahead of its call, as an actor (its rank 0): it waits, its ranks idle and its imports
    done, until run_whole_world runs the one task it is for (see run_rank0), returning once every rank is done (the
    method's name says so: raympi.rank0.WHOLE_WORLD_METHOD); its caller then ends it."""

    def __init__(self):
        remove_flytekit_tmp_dirs()  # ended without a call, it leaves none either (see _leaving_no_flytekit_dirs)

    def run_whole_world(self, sys_path: List[str], payload: bytes, observed: bool) -> Rank0Result:
        return run_rank0(sys_path, payload, observed)

    def launcher_pid(self) -> int:
        """The pid of the world's launcher (mpirun), which ends it; raises, as any call does, once a rank is lost."""
        return launcher_pid()


def report_for_deck() -> None:
    """What this rank tells the "MPI world" deck of itself (see deck.py), as its task's body starts."""
    world.mark("started", at=_process_start())
    world.tell("accelerators", {name: value for name, value in os.environ.items() if name.endswith(ACCELERATOR_VARS)})
    world.mark("body started")
    world.share()


def _process_start() -> float:
    """When this process started, by the wall clock (from Linux's /proc: its start in ticks since boot)."""
    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        booted = time.time() - float(uptime.read().split()[0])
    return booted + ticks / os.sysconf("SC_CLK_TCK")


def _wait_for_the_call(comm) -> None:
    """Until rank 0 has its call, with sleeps: an MPI wait would keep a CPU busy, in a world started ahead too."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(IDLE_POLL_S)


def remove_working_dirs(run_id: str) -> None:
    """Remove what is left on this node of run `run_id`'s working directories: ranks that were killed, or ended
    by rank 0 (os._exit), or rank 0 frozen in an MPI call, cannot remove their own."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKING_DIR_PREFIX}{run_id}-*")):
        shutil.rmtree(path, ignore_errors=True)


def _load(message) -> Assignment:
    sys_path, payload = message
    sys.path.extend(p for p in sys_path if p not in sys.path)
    return cloudpickle.loads(payload)


class RankCheckpoint(SyncCheckpoint):
    """The task attempt's checkpoint on one rank, as flytekit's entrypoint makes it: every rank can restore (or
    read) the previous attempt's; rank 0 alone saves (or writes) this attempt's, so that ranks never overwrite
    each other. Its scratch space lies in the rank's working directory and goes with it."""

    def __init__(self, destination: str, source: Optional[str], working_dir: str, rank: int):
        super().__init__(checkpoint_dest=destination, checkpoint_src=source)
        move_scratch(self, working_dir)
        self._rank = rank

    def save(self, cp: Union[Path, str, io.BufferedReader]) -> None:
        if self._rank != 0:
            raise RuntimeError(f"MPI rank {self._rank} cannot save the task's checkpoint: rank 0 saves it "
                               "(e.g. `if comm.rank == 0: checkpoint.save(...)`); every rank can restore it")
        super().save(cp)


@contextmanager
def rank_context(assignment: Assignment, rank: int, kept: Set[str]):
    """A flytekit execution context for this rank, as flytekit's entrypoint makes one for a task: its own working
    directory, the driver's raw output and metadata prefixes, execution id and mode, the attempt's checkpoint
    (see RankCheckpoint), so `flytekit.current_context()` and data types work on every rank.

    On leaving, the working directory is removed, but for the paths in `kept` (filled in by the caller)."""
    working_dir = tempfile.mkdtemp(prefix=f"{WORKING_DIR_PREFIX}{assignment.run_id}-{rank}-")
    ctx = FlyteContextManager.current_context()
    params = ExecutionParameters(
        execution_id=assignment.execution_id,
        task_id=assignment.task_id,
        execution_date=datetime.now(timezone.utc),
        stats=ctx.user_space_params.stats,
        logging=logger,
        tmp_dir=working_dir,
        raw_output_prefix=assignment.raw_output_prefix,
        output_metadata_prefix=assignment.output_metadata_prefix,
        checkpoint=RankCheckpoint(*assignment.checkpoint, working_dir, rank) if assignment.checkpoint else None,
        enable_deck=assignment.task.enable_deck,
        decks=[],
    )
    state = ctx.new_execution_state(working_dir=working_dir).with_params(mode=assignment.mode, user_space_params=params)
    file_access = FileAccessProvider(local_sandbox_dir=working_dir, raw_output_prefix=assignment.raw_output_prefix)
    try:
        with FlyteContextManager.with_context(ctx.with_file_access(file_access).with_execution_state(state)) as rank_ctx:
            yield rank_ctx
    finally:
        _remove_all_but(Path(working_dir), {Path(os.path.abspath(p)) for p in kept})


def _remove_all_but(path: Path, kept: Set[Path]) -> None:
    """Remove `path` (a file or a directory tree), except the paths in `kept` and the directories holding them."""
    if path in kept:
        return
    if path.is_dir() and not path.is_symlink():
        if any(path in k.parents for k in kept):
            for entry in path.iterdir():
                _remove_all_but(entry, kept)
        else:
            shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
