"""What the ranks of a RayMPIJob run: rank 0 (a Ray task in the MPI world) runs the task as flytekit
would and produces its outputs; ranks 1..N-1 run the same function on the same inputs, each in a
flytekit context of its own, and their return values are discarded."""

import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Tuple

import cloudpickle
from flyteidl.core import literals_pb2
from flytekit import PythonFunctionTask, logger
from flytekit.core.base_task import IgnoreOutputs
from flytekit.core.context_manager import ExecutionParameters, ExecutionState, FlyteContextManager
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap

from . import blobs

PEER_ENTRY = f"{__name__}.run_peer"


@dataclass
class Assignment:
    """Everything a rank needs to run the task, from the driver, as the driver's context had it."""

    task: PythonFunctionTask
    inputs: bytes  # a serialized flyteidl LiteralMap
    raw_output_prefix: str
    mode: ExecutionState.Mode
    execution_id: Any
    task_id: Any
    driver_node: str  # Ray node ID of the driver


def literals_to_bytes(literals: LiteralMap) -> bytes:
    return literals.to_flyte_idl().SerializeToString()


def literals_from_bytes(data: bytes) -> LiteralMap:
    return LiteralMap.from_flyte_idl(literals_pb2.LiteralMap.FromString(data))


def run_rank0(sys_path: List[str], payload: bytes) -> Tuple[bytes, Dict[str, bytes]]:
    """The Ray task that is rank 0: share the assignment with the peers, run the task, return its outputs
    (written under the raw output prefix from this node) as a serialized LiteralMap, and in a local run on
    another node than the driver's, the local files they refer to (see blobs.py).

    `payload` is the pickled Assignment; `sys_path` is where the driver found the task's module
    (`pyflyte run wf.py` imports wf from a path only the driver's sys.path has)."""
    import ray
    from mpi4py import MPI

    from raympi import mpi_init

    mpi_init()
    assignment = _load(MPI.COMM_WORLD.bcast((sys_path, payload), root=0))
    # Kept: a local run's file outputs stay where rank 0 wrote them, as in flytekit's own local runs.
    with rank_context(assignment, keep_working_dir=True) as ctx:
        outputs = literals_to_bytes(
            PythonFunctionTask.dispatch_execute(assignment.task, ctx, literals_from_bytes(assignment.inputs)))
        elsewhere = ray.get_runtime_context().get_node_id() != assignment.driver_node
        return outputs, blobs.pack(outputs) if elsewhere and ctx.execution_state.is_local_execution() else {}


def run_peer() -> None:
    """The worker entry of ranks 1..N-1."""
    from mpi4py import MPI

    assignment = _load(MPI.COMM_WORLD.bcast(None, root=0))
    task = assignment.task
    with rank_context(assignment, keep_working_dir=False) as ctx:
        inputs = TypeEngine.literal_map_to_kwargs(ctx, literals_from_bytes(assignment.inputs), task.python_interface.inputs)
        try:
            task.execute(**inputs)
        except IgnoreOutputs:
            logger.debug("rank %d ignores its outputs", MPI.COMM_WORLD.rank)


def _load(message) -> Assignment:
    sys_path, payload = message
    sys.path.extend(p for p in sys_path if p not in sys.path)
    return cloudpickle.loads(payload)


@contextmanager
def rank_context(assignment: Assignment, keep_working_dir: bool):
    """A flytekit execution context for this rank: its own working directory, the driver's raw output
    prefix, execution id and mode, so `flytekit.current_context()` and data types work on every rank."""
    sandbox = tempfile.mkdtemp(prefix="raympi-rank-")
    ctx = FlyteContextManager.current_context()
    params = ExecutionParameters(
        execution_id=assignment.execution_id,
        task_id=assignment.task_id,
        execution_date=datetime.now(timezone.utc),
        stats=ctx.user_space_params.stats,
        logging=logger,
        tmp_dir=sandbox,
        raw_output_prefix=assignment.raw_output_prefix,
        decks=[],
    )
    state = ctx.new_execution_state(working_dir=sandbox).with_params(mode=assignment.mode, user_space_params=params)
    file_access = FileAccessProvider(local_sandbox_dir=sandbox, raw_output_prefix=assignment.raw_output_prefix)
    try:
        with FlyteContextManager.with_context(ctx.with_file_access(file_access).with_execution_state(state)) as rank_ctx:
            yield rank_ctx
    finally:
        if not keep_working_dir:
            shutil.rmtree(sandbox, ignore_errors=True)
