"""The flagship's pi as a plain Flyte Ray task (flytekitplugins-ray's `RayJobConfig`): four Ray tasks on the same
cluster shape as `examples/pi.py` (2 worker pods x 2 CPUs, a head of 2Gi), the baseline of the "as deployed"
benchmark."""

import numpy as np
import ray
from flytekit import Resources, task
from flytekitplugins.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

WORKER = Resources(cpu="2")


@ray.remote(num_cpus=1)
def hits(seed: int, samples: int) -> int:
    points = np.random.default_rng(seed=seed).uniform(size=(samples, 2))
    return int(((points**2).sum(axis=1) <= 1.0).sum())


@task(task_config=RayJobConfig(
    head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "0"}, requests=Resources(mem="2Gi"),
                                    limits=Resources(mem="2Gi")),
    worker_node_config=[WorkerNodeConfig(group_name="workers", replicas=2, ray_start_params={"num-cpus": "2"},
                                         requests=WORKER, limits=WORKER)]))
def ray_pi(samples: int) -> float:
    return 4.0 * sum(ray.get([hits.remote(seed, samples) for seed in range(4)])) / (samples * 4)
