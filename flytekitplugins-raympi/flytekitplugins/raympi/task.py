"""The task plugin: `@task(task_config=RayMPIJob(...))` serializes as task type `ray` and runs as an MPI job."""

from typing import Any, Callable, Dict

from flytekit import PythonFunctionTask
from flytekit.configuration import SerializationSettings
from flytekit.core.context_manager import FlyteContext, FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.extend import TaskPlugins
from flytekit.models.literals import LiteralMap
from raympi import world

from .config import RayMPIJob
from .quantities import resource_names
from .spec import ray_job_custom


class RayMPIFunctionTask(PythonFunctionTask[RayMPIJob]):
    _TASK_TYPE = "ray"

    def __init__(self, task_config: RayMPIJob, task_function: Callable, **kwargs):
        super().__init__(task_config=task_config, task_function=task_function, task_type=self._TASK_TYPE, **kwargs)

    def get_custom(self, settings: SerializationSettings) -> Dict[str, Any]:
        own = self.resources
        return ray_job_custom(self.task_config, resource_names(own.requests) | resource_names(own.limits))

    def dispatch_execute(self, ctx: FlyteContext, input_literal_map: LiteralMap) -> LiteralMap:
        """Run as rank 0 of an MPI world on Ray, which executes the task the way flytekit would."""
        from . import launch  # imports Ray: flytekit imports this module on every rank, which need none

        return launch.run(self, ctx, input_literal_map)

    def execute(self, **kwargs) -> Any:
        """The body, on a rank of the world. Called outside one (each element of a `map_task`: flytekit's
        ArrayNodeMapTask calls `execute`, locally and in the job it runs on a cluster), a world for these inputs."""
        if world.joined():
            return super().execute(**kwargs)
        ctx = FlyteContextManager.current_context()
        outputs = self.dispatch_execute(ctx, TypeEngine.dict_to_literal_map(ctx, kwargs, self.python_interface.inputs))
        values = TypeEngine.literal_map_to_kwargs(ctx, outputs, self.python_interface.outputs)
        return values.popitem()[1] if len(values) == 1 else tuple(values.values()) or None


TaskPlugins.register_pythontask_plugin(RayMPIJob, RayMPIFunctionTask)
