"""The `mpi` runtime env: Ray starts the worker through mpirun, so the task or actor runs as rank 0.

Register it in the environment of whatever starts the raylet, before Ray starts:
    RAY_RUNTIME_ENV_PLUGINS='[{"class": "raympi.plugin.MPIPlugin"}]'
"""

import logging
import shlex
from typing import List

from . import preflight
from .command import mpirun_command
from .config import MPIConfig
from .ray_internals import RuntimeEnvContext, RuntimeEnvPlugin, require_tested_ray


class MPIPlugin(RuntimeEnvPlugin):
    name = "mpi"
    # After pip/conda/uv (priority 10), so that mpirun wraps the interpreter they chose.
    priority = 90

    @staticmethod
    def validate(runtime_env_dict: dict) -> None:
        """Refuse a bad config, and a node's Ray outside the tested range, before the world is set up."""
        require_tested_ray()
        MPIConfig.parse(runtime_env_dict["mpi"])

    async def create(self, uri, runtime_env, context: RuntimeEnvContext, logger: logging.Logger) -> float:
        """Fail the setup, naming the cause, where the world could not start (see raympi.preflight): Ray would
        otherwise retry the worker forever, a hang instead of an error."""
        problems = await preflight.problems(MPIConfig.parse(runtime_env["mpi"]), context.py_executable)
        if problems:
            raise RuntimeError("\n".join(problems))
        return 0

    def modify_context(self, uris: List[str], runtime_env, context: RuntimeEnvContext,
                       logger: logging.Logger) -> None:
        config = MPIConfig.parse(runtime_env["mpi"])
        context.py_executable = shlex.join(mpirun_command(config, context.py_executable))
        logger.info("mpi runtime env: worker starts as %s", context.py_executable)
