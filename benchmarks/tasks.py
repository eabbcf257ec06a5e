"""The bodies as Flyte tasks: RayMPIJob (the product), kfmpi's MPIJob (runs locally as one process) and a
plain task (flytekit's own local overhead, no MPI)."""

from functools import cache

from flytekit import task, workflow
from flytekitplugins.kfmpi import Launcher, MPIJob, Worker
from flytekitplugins.raympi import RayMPIJob, RunPolicy

from benchmarks import bodies

KINDS = ("raympijob", "kfmpi", "plain")


def nothing() -> int:
    return 1


@cache
def flyte_task(kind: str, ranks: int, body: str = "launch"):
    if kind == "plain":
        return task(nothing)
    config = {
        "raympijob": lambda: RayMPIJob(slots=ranks, run_policy=RunPolicy(active_deadline_seconds=600)),
        "kfmpi": lambda: MPIJob(launcher=Launcher(replicas=1), worker=Worker(replicas=ranks), slots=1),
    }[kind]()
    return task(task_config=config)(getattr(bodies, body))


def one_task_workflow(kind: str, ranks: int):
    body = flyte_task(kind, ranks)

    @workflow
    def wf() -> int:
        return body()

    return wf
