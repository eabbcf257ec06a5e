"""`RayMPIJob`: the knobs of flytekitplugins-kfmpi's `MPIJob` (same names, same meaning), plus what Ray needs.

Validated by pydantic when the task is decorated: a bad value fails there, naming the field and what
it accepts.
"""

from enum import Enum
from typing import Annotated, Dict, List, Optional

from flytekit import Resources
from pydantic import AfterValidator, ConfigDict, Field, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

_STRICT = ConfigDict(arbitrary_types_allowed=True, extra="forbid", strict=True)


def _no_command(command):
    if command is not None:
        raise ValueError("RayMPIJob runs the task function on every rank; a custom command is not supported "
                         "(leave command unset)")
    return command


NoCommand = Annotated[Optional[List[str]], AfterValidator(_no_command)]


class RestartPolicy(Enum):
    """Accepted for MPIJob compatibility; KubeRay restarts Ray pods itself, Flyte `retries` rerun the task."""

    ALWAYS = "Always"
    FAILURE = "OnFailure"
    NEVER = "Never"


class CleanPodPolicy(Enum):
    """ALL or RUNNING tear the Ray cluster down when the job finishes (RayJob shutdownAfterJobFinishes)."""

    NONE = "None"
    ALL = "All"
    RUNNING = "Running"


@dataclass(config=_STRICT)
class RunPolicy:
    """As in MPIJob. `active_deadline_seconds` is enforced by the plugin at run time (RayJob has no such
    field); `ttl_seconds_after_finished` maps to the RayJob's; `backoff_limit` is Flyte's job: use
    `@task(retries=...)`."""

    clean_pod_policy: Optional[CleanPodPolicy] = None
    ttl_seconds_after_finished: Optional[StrictInt] = Field(default=None, ge=0)
    active_deadline_seconds: Optional[StrictInt] = Field(default=None, gt=0)
    backoff_limit: Optional[StrictInt] = Field(default=None, ge=0)


class ActiveDeadlineExceeded(TimeoutError):
    """The job ran longer than `RunPolicy.active_deadline_seconds` (or the task's timeout) and was stopped."""


@dataclass(config=_STRICT)
class Launcher:
    """The Ray head, where the task's entrypoint runs (not an MPI rank). `command` is not supported:
    the entrypoint is always the task itself."""

    command: NoCommand = None
    image: Optional[StrictStr] = None
    requests: Optional[Resources] = None
    limits: Optional[Resources] = None
    replicas: Optional[StrictInt] = Field(default=None, ge=1, le=1)
    restart_policy: Optional[RestartPolicy] = None


@dataclass(config=_STRICT)
class Worker:
    """The Ray worker nodes that host the MPI ranks, `slots` ranks on each. `command` is not supported:
    every rank runs the task function."""

    command: NoCommand = None
    image: Optional[StrictStr] = None
    requests: Optional[Resources] = None
    limits: Optional[Resources] = None
    replicas: Optional[StrictInt] = Field(default=None, ge=1)
    restart_policy: Optional[RestartPolicy] = None


@dataclass(config=_STRICT)
class RayMPIJob:
    """Run the task as a `workers x slots`-rank MPI job on Ray; the body is rank 0, mpirun starts the rest.

    Args:
        launcher: the Ray head (resources, image); exactly one replica.
        worker: the Ray worker nodes; `replicas` of them, `slots` ranks each.
        slots: ranks per worker (CPUs each worker offers to Ray, or GPUs when the worker requests GPUs).
        run_policy: as in MPIJob; see `RunPolicy`.
        num_workers, num_launcher_replicas: MPIJob's older spelling of `worker.replicas` and
            `launcher.replicas` (give one spelling, not both).
        address: an existing Ray cluster (default: RAY_ADDRESS if set, else an embedded local Ray).
        runtime_env: the Ray runtime env of the job (pip, env_vars, working_dir, ...), never "mpi".
        mpirun_args: extra mpirun arguments, passed through.
        shutdown_after_job_finishes, ttl_seconds_after_finished: as in flytekitplugins-ray's RayJobConfig.
        placement_timeout_seconds: how long to wait for Ray to reserve the world's slots before failing.
    """

    launcher: Launcher = Field(default_factory=Launcher)
    worker: Worker = Field(default_factory=Worker)
    slots: StrictInt = Field(default=1, ge=1)
    run_policy: Optional[RunPolicy] = None
    num_launcher_replicas: Optional[StrictInt] = Field(default=None, ge=1, le=1)
    num_workers: Optional[StrictInt] = Field(default=None, ge=1)
    address: Optional[StrictStr] = None
    runtime_env: Optional[Dict] = None
    mpirun_args: List[StrictStr] = Field(default_factory=list)
    shutdown_after_job_finishes: bool = False
    ttl_seconds_after_finished: Optional[StrictInt] = Field(default=None, ge=0)
    placement_timeout_seconds: StrictInt = Field(default=600, gt=0)

    @model_validator(mode="after")
    def _consistent(self):
        for old, new in (("num_workers", "worker.replicas"), ("num_launcher_replicas", "launcher.replicas")):
            group, field = new.split(".")
            if getattr(self, old) is not None and getattr(getattr(self, group), field) is not None:
                raise ValueError(f"give either {old} or {new}, not both ({new} is the current spelling)")
        if self.runtime_env and "mpi" in self.runtime_env:
            raise ValueError("runtime_env must not hold 'mpi': RayMPIJob sets it; pass mpirun arguments as mpirun_args")
        gpus = self.gpus_per_worker
        if gpus and gpus != self.slots:
            raise ValueError(f"slots={self.slots} but the worker requests {gpus} GPUs: with GPUs, "
                             "each rank gets one, so slots must equal the worker's GPU count")
        return self

    @property
    def workers(self) -> int:
        return self.num_workers or self.worker.replicas or 1

    @property
    def world_size(self) -> int:
        return self.workers * self.slots

    @property
    def gpus_per_worker(self) -> int:
        for resources in (self.worker.limits, self.worker.requests):
            if resources is not None and resources.gpu is not None:
                return int(resources.gpu)
        return 0

    @property
    def active_deadline_seconds(self) -> Optional[int]:
        return self.run_policy.active_deadline_seconds if self.run_policy else None
