"""Flyte 2 tasks that run as MPI jobs (mpi4py, Horovod) on Ray:
`flyte.TaskEnvironment(name=..., plugin_config=RayMPIJob(...))`, the same config as flytekit's `@task(task_config=...)`
(flytekitplugins.raympi), one definition for both SDKs."""

from flytekitplugins.raympi.config import (ActiveDeadlineExceeded, CleanPodPolicy, Launcher, RayMPIJob, RestartPolicy,
                                           RunPolicy, Worker)

from .task import RayMPITask

__all__ = [
    "ActiveDeadlineExceeded",
    "CleanPodPolicy",
    "Launcher",
    "RayMPIJob",
    "RayMPITask",
    "RestartPolicy",
    "RunPolicy",
    "Worker",
]
