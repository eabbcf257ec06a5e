"""RayMPIJob's config (MPIJob's knobs, validated at decoration) and its serialized RayJob spec."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from flyteidl.admin import task_pb2
from flyteidl.plugins.ray_pb2 import RayJob
from flytekit import Resources, task
from flytekit.configuration import ImageConfig, SerializationSettings
from google.protobuf.json_format import MessageToDict, ParseDict
from pydantic import ValidationError

from flytekitplugins.raympi import (
    CleanPodPolicy,
    Launcher,
    RayMPIFunctionTask,
    RayMPIJob,
    RunPolicy,
    Worker,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_ENV = [{"name": "RAY_RUNTIME_ENV_PLUGINS", "value": '[{"class": "raympi.plugin.MPIPlugin"}]'},
              {"name": "RAY_worker_register_timeout_seconds", "value": "300"}]
SETTINGS = SerializationSettings(image_config=ImageConfig.auto(img_name="ghcr.io/acme/raympi:0.1"))


def custom_of(config: RayMPIJob) -> dict:
    @task(task_config=config)
    def body(x: int) -> int:
        return x

    assert isinstance(body, RayMPIFunctionTask)
    assert body.task_type == "ray"
    return body.get_custom(SETTINGS)


def pod(container: str, **extra) -> dict:
    return {"podSpec": {"containers": [{"name": container, "env": PLUGIN_ENV, **extra}]}}


def both(**quantities) -> dict:
    """Requests and limits alike: a key given on one side is set on both."""
    return {"requests": quantities, "limits": quantities}


def expected(workers: int, start: dict, worker_pod: dict = None, head_pod: dict = None, **job) -> dict:
    return {
        "rayCluster": {
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "k8sPod": head_pod or pod("ray-head", resources=both(memory="2Gi"))},
            "workerGroupSpec": [
                {
                    "groupName": "mpi-workers",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": start,
                    "k8sPod": worker_pod or pod("ray-worker", resources=both(cpu=start["num-cpus"])),
                }
            ],
        },
        **job,
    }


CASES = {
    "defaults": (RayMPIJob(), expected(1, {"num-cpus": "1"})),
    "2 workers x 2 slots, resources": (
        RayMPIJob(
            launcher=Launcher(replicas=1, requests=Resources(cpu="1", mem="1Gi")),
            worker=Worker(replicas=2, requests=Resources(cpu="2", mem="4Gi"), limits=Resources(cpu="2", mem="4Gi")),
            slots=2,
        ),
        expected(
            2,
            {"num-cpus": "2"},
            worker_pod=pod("ray-worker", resources=both(cpu="2", memory="4Gi")),
            head_pod=pod("ray-head", resources=both(cpu="1", memory="1Gi")),
        ),
    ),
    "a request on one side, a limit on the other": (
        RayMPIJob(launcher=Launcher(limits=Resources(mem="2Gi")),
                  worker=Worker(requests=Resources(cpu="2", ephemeral_storage="10Gi"),
                                limits=Resources(cpu="3", mem="4Gi")), slots=2),
        expected(
            1,
            {"num-cpus": "2"},
            worker_pod=pod("ray-worker", resources={
                "requests": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"},
                "limits": {"cpu": "3", "memory": "4Gi", "ephemeral-storage": "10Gi"}}),
            head_pod=pod("ray-head", resources=both(memory="2Gi")),
        ),
    ),
    "a TTL implies shutdown": (
        RayMPIJob(ttl_seconds_after_finished=60),
        expected(1, {"num-cpus": "1"}, shutdownAfterJobFinishes=True, ttlSecondsAfterFinished=60),
    ),
    "shutdown without a TTL: at once": (
        RayMPIJob(shutdown_after_job_finishes=True),
        expected(1, {"num-cpus": "1"}, shutdownAfterJobFinishes=True),
    ),
    "MPIJob's NONE with a TTL: deleted after the TTL": (
        RayMPIJob(run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.NONE, ttl_seconds_after_finished=30)),
        expected(1, {"num-cpus": "1"}, shutdownAfterJobFinishes=True, ttlSecondsAfterFinished=30),
    ),
    "old spelling, 4 workers x 8 slots": (
        RayMPIJob(num_workers=4, num_launcher_replicas=1, slots=8),
        expected(4, {"num-cpus": "8"}),
    ),
    "GPU workers, images, run policy, runtime env": (
        RayMPIJob(
            launcher=Launcher(image="ghcr.io/acme/head:1"),
            worker=Worker(replicas=3, image="ghcr.io/acme/gpu:1", limits=Resources(gpu="2")),
            slots=2,
            run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.ALL, ttl_seconds_after_finished=60,
                                 active_deadline_seconds=600),
            runtime_env={"env_vars": {"A": "1"}, "pip": ["numpy"]},
        ),
        expected(
            3,
            {"num-gpus": "2"},
            worker_pod=pod("ray-worker", image="ghcr.io/acme/gpu:1", resources=both(**{"nvidia.com/gpu": "2"})),
            head_pod=pod("ray-head", image="ghcr.io/acme/head:1", resources=both(memory="2Gi")),
            runtimeEnvYaml="env_vars:\n  A: '1'\npip:\n- numpy\n",
            shutdownAfterJobFinishes=True,
            ttlSecondsAfterFinished=60,
        ),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_serialized_spec_is_exactly_the_ray_job(name):
    config, want = CASES[name]
    custom = custom_of(config)
    assert custom == want
    # The Flyte backend parses it as a flyteidl RayJob: no field may be unknown to it.
    assert MessageToDict(ParseDict(custom, RayJob(), ignore_unknown_fields=False)) == want


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("slots", [1, 2, 4, 8])
@pytest.mark.parametrize("gpu", [False, True])
def test_every_size_parses_back_as_a_ray_job(workers, slots, gpu):
    resources = Resources(cpu=str(slots), gpu=str(slots)) if gpu else Resources(cpu=str(slots), mem="1Gi")
    config = RayMPIJob(worker=Worker(replicas=workers, requests=resources), slots=slots)
    job = ParseDict(custom_of(config), RayJob(), ignore_unknown_fields=False)
    group = job.ray_cluster.worker_group_spec[0]
    assert (group.replicas, group.min_replicas, group.max_replicas) == (workers,) * 3
    assert dict(group.ray_start_params) == {("num-gpus" if gpu else "num-cpus"): str(slots)}
    assert config.world_size == workers * slots


@pytest.mark.parametrize(
    "make, field, allowed",
    [
        (lambda: RayMPIJob(slots=0), "slots", "greater than or equal to 1"),
        (lambda: RayMPIJob(slots="2"), "slots", "valid integer"),
        (lambda: Worker(replicas=0), "replicas", "greater than or equal to 1"),
        (lambda: RayMPIJob(num_workers=0), "num_workers", "greater than or equal to 1"),
        (lambda: Launcher(replicas=2), "replicas", "less than or equal to 1"),
        (lambda: RayMPIJob(num_launcher_replicas=3), "num_launcher_replicas", "less than or equal to 1"),
        (lambda: RayMPIJob(num_workers=2, worker=Worker(replicas=2)), "num_workers or worker.replicas", "not both"),
        (lambda: RayMPIJob(num_launcher_replicas=1, launcher=Launcher(replicas=1)),
         "num_launcher_replicas or launcher.replicas", "not both"),
        (lambda: RayMPIJob(worker=Worker(limits=Resources(gpu="2")), slots=1), "slots=1", "GPU count"),
        (lambda: RayMPIJob(runtime_env={"mpi": {"args": []}}), "runtime_env", "mpirun_args"),
        (lambda: RayMPIJob(mpirun_args="--bind-to none"), "mpirun_args", "valid list"),
        (lambda: RayMPIJob(worker={"replicas": 2}), "worker", "instance of Worker"),
        (lambda: Worker(command=["python", "x.py"]), "command", "not supported"),
        (lambda: RunPolicy(active_deadline_seconds=0), "active_deadline_seconds", "greater than 0"),
        (lambda: RayMPIJob(slot=2), "slot", "Unexpected keyword argument"),
        (lambda: RayMPIJob(worker=Worker(requests=Resources(gpu="1"), limits=Resources(gpu="2")), slots=2),
         "worker.requests.gpu=1 but worker.limits.gpu=2", "give the GPU count once"),
        (lambda: RayMPIJob(ttl_seconds_after_finished=60, run_policy=RunPolicy(ttl_seconds_after_finished=60)),
         "ttl_seconds_after_finished or run_policy.ttl_seconds_after_finished", "not both"),
        (lambda: RayMPIJob(shutdown_after_job_finishes=False, ttl_seconds_after_finished=60),
         "shutdown_after_job_finishes=False contradicts ttl_seconds_after_finished=60", "a TTL implies shutdown"),
        (lambda: RayMPIJob(shutdown_after_job_finishes=False,
                           run_policy=RunPolicy(ttl_seconds_after_finished=60)),
         "shutdown_after_job_finishes=False contradicts", "drop shutdown_after_job_finishes"),
        (lambda: RayMPIJob(shutdown_after_job_finishes=True,
                           run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.NONE)),
         "shutdown_after_job_finishes=True contradicts run_policy.clean_pod_policy=NONE", "give one of them"),
        (lambda: RayMPIJob(shutdown_after_job_finishes=False,
                           run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.ALL)),
         "shutdown_after_job_finishes=False contradicts run_policy.clean_pod_policy=ALL", "give one of them"),
        (lambda: RayMPIJob(shutdown_after_job_finishes=1), "shutdown_after_job_finishes", "valid boolean"),
        (lambda: RayMPIJob(flavour="intel"), "flavour", "'openmpi', 'mpich' or 'impi'"),
        (lambda: RayMPIJob(worker=Worker(requests=Resources(cpu="4", mem="8Gi"), limits=Resources(cpu="2", mem="8Gi"))),
         "worker.requests.cpu='4' is above worker.limits.cpu='2'", "raise the limit or lower the request"),
        (lambda: RayMPIJob(launcher=Launcher(requests=Resources(mem="8Gi"), limits=Resources(mem="1Gi"))),
         "launcher.requests.mem='8Gi' is above launcher.limits.mem='1Gi'", "Kubernetes refuses such a pod"),
        (lambda: Worker(requests=Resources(cpu="four")), "worker.requests.cpu='four'", "not a Kubernetes quantity"),
        (lambda: Launcher(limits=Resources(mem="2 GB")), "launcher.limits.mem='2 GB'", "such as 2, 500m, 1.5, 4Gi"),
    ],
)
def test_bad_config_fails_at_decoration_naming_the_field(make, field, allowed):
    with pytest.raises(ValidationError) as caught:
        make()
    assert field in str(caught.value)
    assert allowed in str(caught.value)


# What flytekitplugins-kfmpi's own README and flytesnacks examples pass to MPIJob / HorovodJob.
KFMPI_DOCUMENTED_KWARGS = [
    lambda m: dict(
        launcher=m.Launcher(replicas=1),
        worker=m.Worker(replicas=5, requests=Resources(cpu="2", mem="2Gi"), limits=Resources(cpu="4", mem="2Gi")),
        slots=2,
    ),
    lambda m: dict(num_workers=2, num_launcher_replicas=1, slots=1),
    lambda m: dict(
        launcher=m.Launcher(replicas=1, requests=Resources(cpu="1"), limits=Resources(cpu="2")),
        worker=m.Worker(replicas=1, requests=Resources(cpu="1", mem="1Gi"), limits=Resources(cpu="2", mem="2Gi"),
                        restart_policy=m.RestartPolicy.NEVER),
        slots=1,
        run_policy=m.RunPolicy(clean_pod_policy=m.CleanPodPolicy.NONE, backoff_limit=3,
                               active_deadline_seconds=3600, ttl_seconds_after_finished=60),
    ),
]


@pytest.mark.parametrize("kwargs", KFMPI_DOCUMENTED_KWARGS)
def test_mpijob_keyword_arguments_work_unchanged(kwargs):
    import flytekitplugins.kfmpi as kfmpi
    import flytekitplugins.raympi as raympi

    mpijob = kfmpi.MPIJob(**kwargs(kfmpi))
    ours = RayMPIJob(**kwargs(raympi))
    workers = mpijob.num_workers or mpijob.worker.replicas
    assert ours.world_size == workers * mpijob.slots
    custom_of(ours)


def test_pyflyte_package_of_the_examples_has_the_ray_task(tmp_path):
    out = tmp_path / "flyte-package.tgz"
    subprocess.run(
        [Path(sys.executable).with_name("pyflyte"), "--pkgs", "examples", "package",
         "--image", "ghcr.io/acme/raympi:0.1", "--output", str(out), "--force"],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    with tarfile.open(out) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("estimate_pi_1.pb"))
        spec = task_pb2.TaskSpec.FromString(archive.extractfile(member).read())
    template = spec.template
    assert template.type == "ray"
    assert template.container.args[0] == "pyflyte-execute"
    from examples.pi import estimate_pi

    assert MessageToDict(template.custom) == json.loads(json.dumps(estimate_pi.get_custom(SETTINGS)))
    ParseDict(MessageToDict(template.custom), RayJob(), ignore_unknown_fields=False)


def test_flyte_retries_and_timeout_reach_the_task_template():
    """The Flyte backend retries a failed RayJob and aborts one past its timeout from these fields."""
    from collections import OrderedDict
    from datetime import timedelta

    from flytekit.tools.translator import get_serializable

    @task(task_config=RayMPIJob(slots=2), retries=3, timeout=timedelta(minutes=5))
    def body() -> int:
        return 0

    template = get_serializable(OrderedDict(), SETTINGS, body).template
    assert template.metadata.retries.retries == 3
    assert template.metadata.timeout == timedelta(minutes=5)
    assert template.type == "ray"
