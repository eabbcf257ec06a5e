"""The Flyte 2 task plugin: a TaskEnvironment with `plugin_config=RayMPIJob(...)` makes its tasks run as MPI worlds on
Ray (locally too, on an embedded Ray), serialized as task type `ray` with the Ray cluster of flytekitplugins.raympi."""

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from inspect import iscoroutinefunction
from typing import Any, Dict, Optional

import cloudpickle
import flyte
from flyte.extend import AsyncFunctionTaskTemplate, TaskPluginRegistry
from flyte.models import SerializationContext, TaskContext
from flyteidl2.plugins.ray_pb2 import RayJob
from google.protobuf.json_format import MessageToDict, ParseDict

from flytekitplugins.raympi.config import RayMPIJob
from flytekitplugins.raympi.quantities import resource_names
from flytekitplugins.raympi.spec import ray_job_custom

from .ranks import Call, MPI_WORLD_TAB


@dataclass(kw_only=True)
class RayMPITask(AsyncFunctionTaskTemplate):
    """The body runs as rank 0 of a `RayMPIJob` world and returns the task's outputs; every other rank runs the same
    function (a coroutine function too) on the same inputs, with `flyte.ctx()` as rank 0's."""

    task_type: str = "ray"
    plugin_config: RayMPIJob

    def custom_config(self, sctx: SerializationContext) -> Optional[Dict[str, Any]]:
        """Flyte 2's `RayJob` of the same Ray cluster as flytekit's (one function builds both)."""
        return MessageToDict(ParseDict(ray_job_custom(self.plugin_config, resource_names(self.resources)), RayJob()))

    async def execute(self, *args, **kwargs) -> Any:
        """Run the world from this process (the Ray job's driver on a cluster, the caller's locally)."""
        return await asyncio.to_thread(self._run_world, flyte.ctx() or None, *args, **kwargs)

    def forward(self, *args, **kwargs) -> Any:
        """A call outside any run (`train(epochs=3)`) runs the world too, never a lone rank."""
        if iscoroutinefunction(self.func):
            return asyncio.to_thread(self._run_world, None, *args, **kwargs)
        return self._run_world(None, *args, **kwargs)

    def _run_world(self, context: Optional[TaskContext], *args, **kwargs) -> Any:
        """The world's run of this call (`context`: the run's, None outside one): rank 0's return value; with
        `report=True`, rank 0's report tabs and the "MPI world" tab in the run's report."""
        from flytekitplugins.raympi import launch
        from flytekitplugins.raympi.deck import world_deck

        marks: Dict[str, float] = {}
        observed = bool(context and self.report)
        inputs = self.interface.convert_to_kwargs(*args, **kwargs)

        def assign(run_id: str, driver_node: str) -> Call:
            return Call(self.func, inputs, context, observed, driver_node, run_id)

        try:
            outputs, _, _, ranks = launch.run_world(self.plugin_config, self.name, assign, observed,
                                                    launch.deadline(self.plugin_config, _seconds(self.timeout)), marks)
        except Exception as error:
            if observed and getattr(error, "mpi_world", None):
                context.report.get_tab(MPI_WORLD_TAB).replace(
                    world_deck(error.mpi_world, marks, launch.failure(error)).html)
            raise
        value, tabs = cloudpickle.loads(outputs)
        if observed:
            context.report.tabs.update(tabs)
            context.report.get_tab(MPI_WORLD_TAB).replace(world_deck(ranks, marks, failure=None).html)
        return value


def _seconds(timeout) -> Optional[float]:
    """The task's `timeout` as the seconds of its run time (flyte.Timeout's max_runtime); None where unlimited (unset
    or zero, as Flyte 2 reads it)."""
    if timeout is None:
        return None
    runtime = timeout.max_runtime if isinstance(timeout, flyte.Timeout) else timeout  # a bare one is max_runtime
    seconds = runtime.total_seconds() if isinstance(runtime, timedelta) else runtime
    return float(seconds) if seconds else None


TaskPluginRegistry.register(config_type=RayMPIJob, plugin=RayMPITask)
