"""The driver side of a RayMPIJob run: connect to Ray (or start an embedded one), reserve the world's
slots, run rank 0 inside an MPI world started by the `mpi` runtime env, and bring back its outputs."""

import json
import logging
import os
import sys
from typing import Optional, Tuple

import cloudpickle
import ray
from flytekit import logger
from flytekit.core.context_manager import FlyteContext
from flytekit.models.literals import LiteralMap
from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
from ray.exceptions import GetTimeoutError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

import raympi

from . import blobs
from .config import ActiveDeadlineExceeded, RayMPIJob
from .ranks import PEER_ENTRY, Assignment, literals_from_bytes, literals_to_bytes, run_rank0

# A failed MPI world is not retried by Ray: Flyte's `retries` decide that.
_RANK0 = ray.remote(max_retries=0)(run_rank0)
# The embedded local Ray's CPU count, or None when connected to a cluster (or not at all).
_embedded_cpus: Optional[int] = None


def run(task, ctx: FlyteContext, inputs: LiteralMap) -> LiteralMap:
    config: RayMPIJob = task.task_config
    _connect(config)
    bundle = {"GPU": config.slots} if config.gpus_per_worker else {"CPU": config.slots}
    # An embedded Ray is one node; on a cluster each worker is a node of its own, as in an MPIJob.
    reservation = placement_group([bundle] * config.workers, strategy="PACK" if _embedded_cpus else "STRICT_SPREAD")
    try:
        _wait_for(reservation, config)
        rank0 = _RANK0.options(
            name=f"{task.name} (MPI rank 0)",
            num_cpus=0 if config.gpus_per_worker else config.slots,
            num_gpus=config.slots if config.gpus_per_worker else 0,
            runtime_env=_runtime_env(config, raympi.placement(reservation, config.slots)),
            scheduling_strategy=PlacementGroupSchedulingStrategy(reservation, placement_group_bundle_index=0),
        )
        params = ctx.user_space_params
        assignment = Assignment(
            task=task,
            inputs=literals_to_bytes(inputs),
            raw_output_prefix=ctx.file_access.raw_output_prefix,
            mode=ctx.execution_state.mode,
            execution_id=params.execution_id,
            task_id=params.task_id,
            driver_node=ray.get_runtime_context().get_node_id(),
        )
        outputs, files = _result(rank0.remote(list(sys.path), cloudpickle.dumps(assignment)), task)
    finally:
        remove_placement_group(reservation)
    return literals_from_bytes(blobs.unpack(outputs, files, ctx.file_access.get_random_local_directory()))


def _result(ref, task):
    seconds, limit = _deadline(task)
    try:
        return ray.get(ref, timeout=seconds)
    except GetTimeoutError:
        ray.cancel(ref, force=True)
        raise ActiveDeadlineExceeded(f"the MPI job ran longer than {limit}={seconds:g} s and was stopped") from None
    except RayTaskError as error:
        raise error.as_instanceof_cause() from None


def _deadline(task) -> Tuple[Optional[float], str]:
    """The sooner of run_policy.active_deadline_seconds and the task's Flyte timeout (which the Flyte
    backend enforces on a cluster, and flytekit's local runs would ignore)."""
    timeout = task.metadata.timeout
    limits = [(task.task_config.active_deadline_seconds, "run_policy.active_deadline_seconds"),
              (timeout.total_seconds() if timeout else None, "timeout")]
    return min(((s, name) for s, name in limits if s is not None), default=(None, ""))


def _runtime_env(config: RayMPIJob, placement: dict) -> dict:
    mpirun_args = ["-n", str(config.world_size), *config.mpirun_args]
    cores = os.cpu_count() or 1
    if _embedded_cpus and config.world_size > cores:  # on a cluster each node offers its ranks' slots
        logger.warning(f"{config.world_size} MPI ranks on a node with {cores} cores: oversubscribing")
        mpirun_args.insert(0, "--oversubscribe")
    env = dict(config.runtime_env or {})
    env["mpi"] = {"args": mpirun_args, "worker_entry": PEER_ENTRY, **placement}
    return env


def _connect(config: RayMPIJob) -> None:
    """Connect to the configured cluster, else reuse or start an embedded local Ray big enough.

    On a cluster, the task's code (fast-registered, in the image, or beside `python wf.py`) is in the
    driver's working directory only: it becomes the job's working_dir, as flytekitplugins-ray does."""
    global _embedded_cpus
    needed = config.world_size
    if ray.is_initialized() and (_embedded_cpus is None or _embedded_cpus >= needed):
        return
    if ray.is_initialized():
        ray.shutdown()
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=_code_env(), logging_level=logging.WARNING)
        _embedded_cpus = None
        return
    _embedded_cpus = max(os.cpu_count() or 1, needed)
    raympi.init_ray(address="local", num_cpus=_embedded_cpus, num_gpus=config.gpus_per_worker * config.workers,
                    include_dashboard=False, logging_level=logging.WARNING)


def _code_env() -> Optional[dict]:
    """The entrypoint's working directory as the job's working_dir, unless the Ray job has one already."""
    job = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR) or "{}")
    if (job.get("runtime_env") or {}).get("working_dir"):
        return None
    return {"working_dir": os.getcwd(), "excludes": ["fast*.tar.gz", "script_mode.tar.gz"]}


def _wait_for(reservation, config: RayMPIJob) -> None:
    try:
        ray.get(reservation.ready(), timeout=config.placement_timeout_seconds)
    except GetTimeoutError:
        raise TimeoutError(
            f"Ray could not reserve {config.workers} worker(s) x {config.slots} slots within "
            f"placement_timeout_seconds={config.placement_timeout_seconds}: the cluster has "
            f"{ray.cluster_resources()} in all"
        ) from None
