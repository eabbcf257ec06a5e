"""`RayMPIJob` -> flyteidl `RayJob`: the Ray cluster the stock Flyte backend and KubeRay start for the task.

The head is the launcher (where `pyflyte-execute` runs as the Ray driver; it offers no CPUs, so no
rank lands there); one worker group of `workers` pods offers `slots` CPUs (or GPUs) each; every pod
has the `mpi` runtime env registered. Pod specs are plain dicts: no `kubernetes` package needed.
What the backend makes of this spec (Flyte 1.16) is pinned down in tests/test_backend_conformance.py.
"""

from typing import AbstractSet, Dict, Optional

import yaml
from flyteidl.core.tasks_pb2 import K8sPod
from flyteidl.plugins.ray_pb2 import HeadGroupSpec, RayCluster, RayJob, WorkerGroupSpec
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.struct_pb2 import Struct

from raympi.registration import PLUGIN_ENV

from .config import RayMPIJob
from .quantities import kubernetes_quantities

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
WORKER_GROUP = "mpi-workers"
# The head runs Ray's GCS, dashboard and agents beside the task's driver: under the Flyte sandbox's default limit
# (1Gi) Ray's memory monitor kills the driver's job (tests/test_as_deployed.py saw it). A launcher given no memory
# gets this, as request and limit. A CPU worker given no CPU gets its slots (the platform default, 500m on the
# sandbox, would throttle its ranks to half a core in all). Neither where the task's own resources name them.
LAUNCHER_MEMORY = "2Gi"


def ray_job_custom(config: RayMPIJob, task_resources: AbstractSet[str] = frozenset()) -> Dict:
    """The task template's `custom`: `MessageToDict` of the flyteidl `RayJob`, which is also the JSON of Flyte 2's
    (flyteidl2's RayJob has the same fields: tests/test_flyte2.py)."""
    return MessageToDict(ray_job(config, task_resources))


def ray_job(config: RayMPIJob, task_resources: AbstractSet[str] = frozenset()) -> RayJob:
    """`task_resources`: the Kubernetes resources the task's own requests or limits name (`@task(requests=...,
    limits=...)`, `TaskEnvironment(resources=...)`), which the pods get where the config names no other."""
    launcher, worker = config.launcher, config.worker
    slots = str(config.slots)
    named = task_resources
    worker_start_params = {"num-gpus": slots} if config.gpus_per_worker else {"num-cpus": slots}
    return RayJob(
        ray_cluster=RayCluster(
            head_group_spec=HeadGroupSpec(
                ray_start_params={"num-cpus": "0"},
                k8s_pod=_pod(HEAD_CONTAINER, launcher.image, launcher.requests, launcher.limits,
                             default={} if "memory" in named else {"memory": LAUNCHER_MEMORY}),
            ),
            worker_group_spec=[
                WorkerGroupSpec(
                    group_name=WORKER_GROUP,
                    replicas=config.workers,
                    min_replicas=config.workers,
                    max_replicas=config.workers,
                    ray_start_params=worker_start_params,
                    k8s_pod=_pod(WORKER_CONTAINER, worker.image, worker.requests, worker.limits,
                                 default={} if config.gpus_per_worker or "cpu" in named else {"cpu": slots}),
                )
            ],
        ),
        runtime_env_yaml=yaml.safe_dump(config.runtime_env) if config.runtime_env else None,
        **_cluster_lifetime(config),
    )


def _cluster_lifetime(config: RayMPIJob) -> Dict:
    """The backend takes the task's TTL only together with shutdown true (then an unset TTL is 0: deleted at
    once); otherwise its own configuration decides (ray.go constructRayJob). So a TTL is sent with shutdown."""
    if not config.cluster_shutdown:
        return {}
    return {"shutdown_after_job_finishes": True, "ttl_seconds_after_finished": config.cluster_ttl or 0}


def _pod(container_name: str, image: Optional[str], requests, limits, default: Dict[str, str]) -> K8sPod:
    container = {"name": container_name, "env": [{"name": k, "value": v} for k, v in PLUGIN_ENV.items()]}
    if image:
        container["image"] = image
    resources = _requests_and_limits(requests, limits, default)
    if resources:
        container["resources"] = resources
    return K8sPod(pod_spec=ParseDict({"containers": [container]}, Struct()))


def _requests_and_limits(requests, limits, default: Dict[str, str]) -> Dict:
    """Every key in both, the side not given copied from the other (per key; flytekit-ray does it per set), and
    `default`'s keys where neither gives them.
    The backend merges them key by key over its own container's, whose limits are its requests (the platform
    default unless the task sets them): a key on one side only would meet that default on the other (cpu
    request 2, limit 500m), and a GPU limit must equal its request."""
    asked, capped = kubernetes_quantities(requests), kubernetes_quantities(limits)
    asked |= {name: value for name, value in default.items() if name not in asked and name not in capped}
    return {"requests": {**capped, **asked}, "limits": {**asked, **capped}} if asked or capped else {}
