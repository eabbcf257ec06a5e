"""The task plugin: `@task(task_config=RayMPIJob(...))` serializes as task type `ray` and runs as an MPI job."""

from typing import Any, Callable, Dict

from flytekit import PythonFunctionTask
from flytekit.configuration import SerializationSettings
from flytekit.core.context_manager import FlyteContext
from flytekit.extend import TaskPlugins
from flytekit.models.literals import LiteralMap

from .config import RayMPIJob
from .spec import ray_job_custom


class RayMPIFunctionTask(PythonFunctionTask[RayMPIJob]):
    _TASK_TYPE = "ray"

    def __init__(self, task_config: RayMPIJob, task_function: Callable, **kwargs):
        super().__init__(task_config=task_config, task_function=task_function, task_type=self._TASK_TYPE, **kwargs)

    def get_custom(self, settings: SerializationSettings) -> Dict[str, Any]:
        return ray_job_custom(self.task_config, self.resources)

    def dispatch_execute(self, ctx: FlyteContext, input_literal_map: LiteralMap) -> LiteralMap:
        """Run as rank 0 of an MPI world on Ray, which executes the task the way flytekit would."""
        from . import launch  # imports Ray: flytekit imports this module on every rank, which need none

        return launch.run(self, ctx, input_literal_map)


TaskPlugins.register_pythontask_plugin(RayMPIJob, RayMPIFunctionTask)
