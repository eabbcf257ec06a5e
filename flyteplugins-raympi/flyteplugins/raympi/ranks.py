"""What each rank of a Flyte 2 task's world runs (see flytekitplugins.raympi.ranks, which starts every rank): the
task's function on the inputs it was called with, in the run's `flyte.ctx()`; rank 0 returns its value and report."""

import asyncio
import contextlib
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import Any, Callable, Dict, Optional

import cloudpickle
import flyte
from flyte.models import TaskContext

from flytekitplugins.raympi.ranks import Rank0Result, observed_result, report_for_deck

# The report tab of the world's ranks, timeline and output (flytekitplugins.raympi.deck's "MPI world" deck).
MPI_WORLD_TAB = "MPI world"


@dataclass
class Call:
    """One call of a Flyte 2 task, as every rank runs it (an assignment: see flytekitplugins.raympi.ranks)."""

    func: Callable
    inputs: Dict[str, Any]  # native values, as the task was called with
    context: Optional[TaskContext]  # the run's flyte.TaskContext; None for a call outside a run
    observed: bool  # the task has a report: the world's ranks go into its "MPI world" tab
    driver_node: str  # Ray node ID of the driver
    run_id: str

    def rank0(self, observed: bool) -> Rank0Result:
        """(the function's value and the report's tabs, pickled), no files or decks, the world's ranks if `observed`."""
        with self._in_context(rank=0):
            if observed:
                report_for_deck()
            value = self._run()
            ranks = observed_result(observed)
        tabs = self.context.report.tabs if observed else {}
        return cloudpickle.dumps((value, tabs)), {}, {}, ranks

    def peer(self, rank: int) -> None:
        with self._in_context(rank):
            if self.observed:
                report_for_deck()
            self._run()

    def _run(self) -> Any:
        if iscoroutinefunction(self.func):
            return asyncio.run(self.func(**self.inputs))
        return self.func(**self.inputs)

    def _in_context(self, rank: int):
        """Inside, `flyte.ctx()` is the run's, its checkpoint this rank's (see PeerCheckpoint). Flyte 2 has no public
        way to set it: this is its internal API that flyte-sdk's own PyTorch plugin uses in its workers, and the
        checkpoint's place in it (tests/test_flyte2.py checks both on every rank)."""
        if self.context is None:
            return contextlib.nullcontext()
        from flyte._checkpoint import CHECKPOINT_CACHE_KEY
        from flyte._context import internal_ctx

        context, checkpoint = self.context, self.context.checkpoint
        if rank != 0 and checkpoint is not None:
            peers = PeerCheckpoint(rank, checkpoint.remote_destination, checkpoint.remote_source)
            context = context.replace(data={**context.data, CHECKPOINT_CACHE_KEY: peers})
        return internal_ctx().replace_task_context(context)


class PeerCheckpoint(flyte.Checkpoint):
    """The attempt's checkpoint on a peer: it loads the previous attempt's as rank 0 does; rank 0 alone saves this
    attempt's, so that ranks never overwrite each other (as flytekitplugins.raympi.ranks.RankCheckpoint)."""

    def __init__(self, rank: int, destination: str, source: Optional[str]):
        super().__init__(destination, source)
        self._rank = rank

    async def save(self, data) -> None:
        self._refuse()

    def save_sync(self, data) -> None:
        self._refuse()

    def _refuse(self):
        raise RuntimeError(f"MPI rank {self._rank} cannot save the task's checkpoint: rank 0 saves it (e.g. `if "
                           "comm.rank == 0: checkpoint.save_sync(...)`); every rank can load it")
