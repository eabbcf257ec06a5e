"""Flyte tasks that run as MPI jobs (mpi4py, Horovod) on Ray: `@task(task_config=RayMPIJob(...))`."""

from .config import ActiveDeadlineExceeded, CleanPodPolicy, Launcher, RayMPIJob, RestartPolicy, RunPolicy, Worker
from .task import RayMPIFunctionTask

__all__ = [
    "ActiveDeadlineExceeded",
    "CleanPodPolicy",
    "Launcher",
    "RayMPIFunctionTask",
    "RayMPIJob",
    "RestartPolicy",
    "RunPolicy",
    "Worker",
]
