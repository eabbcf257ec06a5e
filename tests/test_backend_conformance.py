"""What the Flyte backend makes of a RayMPIJob task, on the model of its Go code in scripts/flyte_backend.py
(flyteorg/flyte v1.16.8). The inputs are real: tasks decorated with RayMPIJob, serialized by flytekit."""

import functools
import subprocess
import sys
import tarfile
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import yaml
from flyteidl.admin import task_pb2
from flytekit import Resources, task
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable
from google.protobuf.json_format import MessageToDict

from flytekitplugins.raympi import CleanPodPolicy, Launcher, RayMPIJob, RunPolicy, Worker
from scripts.flyte_backend import (HEAD_ENV, HEAD_PARAMETERS, KEEPS_CLUSTERS, SANDBOX_TASK_DEFAULTS,
                                   STOCK, WORKER_ENV, WORKER_PARAMETERS, admission_errors, backend_ray_job, quantity,
                                   task_container)

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SerializationSettings(image_config=ImageConfig.auto(img_name="ghcr.io/acme/raympi:0.1"))
PLUGIN_ENV_NAMES = ["RAY_RUNTIME_ENV_PLUGINS", "RAY_worker_register_timeout_seconds"]


# --- Real tasks -------------------------------------------------------------------------------------------------

def template_of(config: RayMPIJob, **task_kwargs):
    """The TaskTemplate flytekit serializes (as `pyflyte register/package` does) for a RayMPIJob task."""

    @task(task_config=config, **task_kwargs)
    def body(x: int) -> int:
        return x

    return get_serializable(OrderedDict(), SETTINGS, body).template.to_flyte_idl()


# Each case: the config, the task's own keyword arguments, and the pods' resources Kubernetes gets, by hand from the
# README's rules ("request/limit"; the sandbox's task defaults are cpu 500m and memory 1Gi, a launcher's memory not
# given is 2Gi, a CPU worker's CPU not given is its slots).
MATRIX = {
    "defaults": (
        lambda: RayMPIJob(), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 1/1, memory 1Gi/1Gi"}),
    "README: worker requests only": (
        lambda: RayMPIJob(launcher=Launcher(replicas=1),
                          worker=Worker(replicas=1, requests=Resources(cpu="4", mem="4Gi")), slots=4), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 4/4, memory 4Gi/4Gi"}),
    "worker limits only, below the platform default": (
        lambda: RayMPIJob(worker=Worker(limits=Resources(cpu="250m", mem="512Mi"))), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 250m/250m, memory 512Mi/512Mi"}),
    "cpu requested, memory limited": (
        lambda: RayMPIJob(worker=Worker(requests=Resources(cpu="2"), limits=Resources(mem="4Gi")), slots=2), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 2/2, memory 4Gi/4Gi"}),
    "requests below limits, 1000Mi under 1Gi": (
        lambda: RayMPIJob(worker=Worker(requests=Resources(cpu="500m", mem="1000Mi"),
                                        limits=Resources(cpu="1", mem="1Gi"))), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 500m/1, memory 1000Mi/1Gi"}),
    "GPU requested only": (
        lambda: RayMPIJob(worker=Worker(replicas=2, requests=Resources(gpu="2")), slots=2), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 500m/500m, memory 1Gi/1Gi, nvidia.com/gpu 2/2"}),
    "GPU limited only": (
        lambda: RayMPIJob(worker=Worker(limits=Resources(cpu="3", gpu="1"))), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 3/3, memory 1Gi/1Gi, nvidia.com/gpu 1/1"}),
    "launcher requests only, images": (
        lambda: RayMPIJob(launcher=Launcher(image="ghcr.io/acme/head:1", requests=Resources(cpu="1", mem="2Gi")),
                          worker=Worker(image="ghcr.io/acme/worker:1")), {},
        {"launcher": "cpu 1/1, memory 2Gi/2Gi", "worker": "cpu 1/1, memory 1Gi/1Gi"}),
    "ephemeral storage requested": (
        lambda: RayMPIJob(worker=Worker(requests=Resources(ephemeral_storage="10Gi"))), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 1/1, memory 1Gi/1Gi, ephemeral-storage 10Gi/10Gi"}),
    "MPIJob README: requests and limits": (
        lambda: RayMPIJob(launcher=Launcher(replicas=1),
                          worker=Worker(replicas=5, requests=Resources(cpu="2", mem="2Gi"),
                                        limits=Resources(cpu="4", mem="2Gi")), slots=2), {},
        {"launcher": "cpu 500m/500m, memory 2Gi/2Gi", "worker": "cpu 2/4, memory 2Gi/2Gi"}),
    "task resources, none of the launcher's or worker's own": (
        lambda: RayMPIJob(slots=2), {"requests": Resources(cpu="3", mem="3Gi")},
        {"launcher": "cpu 3/3, memory 3Gi/3Gi", "worker": "cpu 3/3, memory 3Gi/3Gi"}),
    "task resources and env under the worker's": (
        lambda: RayMPIJob(worker=Worker(requests=Resources(cpu="1"))),
        {"requests": Resources(cpu="4", mem="8Gi"), "environment": {"APP_SETTING": "1"}},
        {"launcher": "cpu 4/4, memory 8Gi/8Gi", "worker": "cpu 1/1, memory 8Gi/8Gi"}),
}


@pytest.fixture(scope="module", params=list(MATRIX))
def case(request):
    make, task_kwargs, _ = MATRIX[request.param]
    config = make()
    template = template_of(config, **task_kwargs)
    return config, template, backend_ray_job(template)


def pods(job: dict):
    return [("launcher", job["head"]["pod"])] + [("worker", group["pod"]) for group in job["workers"]]


def resources_of(job: dict) -> dict:
    """Each group's container resources as MATRIX writes them ("cpu request/limit, ..."), every key in both."""
    found = {}
    for group, pod in pods(job):
        resources = pod["containers"][0]["resources"]
        assert resources["requests"].keys() == resources["limits"].keys(), group
        found[group] = ", ".join(f"{key} {resources['requests'][key]}/{resources['limits'][key]}"
                                 for key in resources["requests"])
    return found


def test_quantities_compare_as_kubernetes_does():
    assert quantity("500m") < quantity("2") and quantity("1000Mi") < quantity("1Gi")
    assert quantity("1G") < quantity("1Gi")
    assert quantity("0.5") == quantity("500m") and quantity("1e3") == quantity("1k")
    assert quantity("1.5Gi") == quantity("1536Mi")
    with pytest.raises(ValueError):
        quantity("2 cores")


def test_every_pod_is_admissible(case):
    """No config of the matrix makes a pod Kubernetes rejects, with the sandbox's defaults under it."""
    _, _, job = case
    assert [e for _, pod in pods(job) for c in pod["containers"] for e in admission_errors(c)] == []


@pytest.mark.parametrize("name", list(MATRIX))
def test_each_pod_gets_the_resources_the_readme_says(name):
    make, task_kwargs, expected = MATRIX[name]
    assert resources_of(backend_ray_job(template_of(make(), **task_kwargs))) == expected


def test_the_merged_containers_are_the_task_container_renamed_with_our_env_appended(case):
    config, template, job = case
    base = task_container(template, SANDBOX_TASK_DEFAULTS)
    for (group, pod), name, backend_env in zip(pods(job), ("ray-head", "ray-worker"), (HEAD_ENV, WORKER_ENV)):
        (container,) = pod["containers"]
        assert container["name"] == name
        assert container["image"] == (getattr(config, group).image or template.container.image)
        assert container["args"] == []
        env = container["env"]
        assert env[:len(base["env"]) + len(backend_env)] == base["env"] + backend_env
        assert [e["name"] for e in env[len(base["env"]) + len(backend_env):]] == PLUGIN_ENV_NAMES
        assert len({e["name"] for e in env}) == len(env), "an env name given twice: Kubernetes keeps the last"


def test_our_pod_specs_use_only_what_the_backend_reads(case):
    """The backend decodes k8s_pod with encoding/json (unknown fields vanish) and drops containers of other names."""
    _, template, _ = case
    cluster = MessageToDict(template.custom)["rayCluster"]
    groups = [(cluster["headGroupSpec"], "ray-head")] + [(g, "ray-worker") for g in cluster["workerGroupSpec"]]
    for spec, name in groups:
        pod_spec = spec["k8sPod"]["podSpec"]
        assert set(pod_spec) == {"containers"} and [c["name"] for c in pod_spec["containers"]] == [name]
        (container,) = pod_spec["containers"]
        assert set(container) <= {"name", "env", "image", "resources"}
        assert all(set(e) == {"name", "value"} for e in container["env"])
        assert set(container.get("resources", {})) <= {"requests", "limits"}
        for side in container.get("resources", {}).values():
            assert all(quantity(q) >= 0 for q in side.values())


def test_ray_start_params_are_ours_with_the_backends_keys_added(case):
    config, _, job = case
    assert job["head"]["rayStartParams"] == {**HEAD_PARAMETERS, "num-cpus": "0"}
    (workers,) = job["workers"]
    ours = {"num-gpus" if config.gpus_per_worker else "num-cpus": str(config.slots)}
    assert workers["rayStartParams"] == {**WORKER_PARAMETERS, **ours}
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (config.workers,) * 3


def test_the_entrypoint_is_the_task_command(case):
    _, template, job = case
    assert job["entrypoint"] == " ".join(template.container.args)
    assert job["entrypoint"].startswith("pyflyte-execute --inputs {{.input}} ")
    assert job["entrypoint"].endswith(f"task-module {__name__} task-name body")


def lifetime(name, backend, applied, **asked):
    """What the task asks, under the backend's plugins.ray config -> (shutdownAfterJobFinishes,
    ttlSecondsAfterFinished) in the RayJob."""
    return pytest.param(asked, backend, applied, id=f"{name}, {'stock' if backend is STOCK else 'keeping'} backend")


LIFETIMES = [
    lifetime("nothing", STOCK, (True, 3600)),
    lifetime("nothing", KEEPS_CLUSTERS, (False, 3600)),
    lifetime("ttl", STOCK, (True, 60), ttl_seconds_after_finished=60),
    lifetime("ttl", KEEPS_CLUSTERS, (True, 60), ttl_seconds_after_finished=60),
    lifetime("ttl 0", STOCK, (True, 0), ttl_seconds_after_finished=0),
    lifetime("run_policy ttl", STOCK, (True, 60), run_policy=RunPolicy(ttl_seconds_after_finished=60)),
    lifetime("ALL", STOCK, (True, 0), run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.ALL)),
    lifetime("RUNNING, ttl", STOCK, (True, 30),
             run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.RUNNING, ttl_seconds_after_finished=30)),
    lifetime("MPIJob README: NONE, ttl", STOCK, (True, 60),
             run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.NONE, ttl_seconds_after_finished=60)),
    lifetime("shutdown", STOCK, (True, 0), shutdown_after_job_finishes=True),
    lifetime("shutdown, ttl", KEEPS_CLUSTERS, (True, 120), shutdown_after_job_finishes=True,
             ttl_seconds_after_finished=120),
]
# Asking to keep the cluster warns: only the backend's configuration can grant it.
KEEPS = [
    lifetime("shutdown False", STOCK, (True, 3600), shutdown_after_job_finishes=False),
    lifetime("shutdown False", KEEPS_CLUSTERS, (False, 3600), shutdown_after_job_finishes=False),
    lifetime("NONE", STOCK, (True, 3600), run_policy=RunPolicy(clean_pod_policy=CleanPodPolicy.NONE)),
]


@pytest.mark.parametrize("asked, backend, applied", LIFETIMES)
def test_the_backend_applies_the_lifetime_asked(asked, backend, applied):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = RayMPIJob(**asked)
    job = backend_ray_job(template_of(config), ray_config=backend)
    assert (job["shutdownAfterJobFinishes"], job["ttlSecondsAfterFinished"]) == applied


@pytest.mark.parametrize("asked, backend, applied", KEEPS)
def test_asking_to_keep_the_cluster_warns_what_the_backend_does(asked, backend, applied):
    with pytest.warns(UserWarning, match="cannot keep the Ray cluster.*plugins.ray.shutdownAfterJobFinishes: false"):
        config = RayMPIJob(**asked)
    job = backend_ray_job(template_of(config), ray_config=backend)
    assert (job["shutdownAfterJobFinishes"], job["ttlSecondsAfterFinished"]) == applied


@pytest.fixture(scope="module")
def packaged_pi(tmp_path_factory):
    """estimate_pi's TaskTemplate as `pyflyte package` writes it."""
    out = tmp_path_factory.mktemp("package") / "flyte-package.tgz"
    subprocess.run([Path(sys.executable).with_name("pyflyte"), "--pkgs", "examples", "package", "--image",
                    "ghcr.io/acme/raympi:0.1", "--output", str(out), "--force"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    with tarfile.open(out) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("estimate_pi_1.pb"))
        return task_pb2.TaskSpec.FromString(archive.extractfile(member).read()).template


def test_the_packaged_flagship_example_runs_as_the_readme_says(packaged_pi):
    job = backend_ray_job(packaged_pi)
    assert [e for _, pod in pods(job) for c in pod["containers"] for e in admission_errors(c)] == []
    for _, pod in pods(job):
        assert PLUGIN_ENV_NAMES[0] in [e["name"] for e in pod["containers"][0]["env"]]
    assert (job["workers"][0]["replicas"], job["workers"][0]["rayStartParams"]["num-cpus"]) == (2, "2")
    assert (job["shutdownAfterJobFinishes"], job["ttlSecondsAfterFinished"]) == (True, 3600)
    assert job["entrypoint"].endswith("task-module examples.pi task-name estimate_pi")


# --- Deployment files -------------------------------------------------------------------------------------------

# docker/sandbox-bundled/manifests/complete.yaml and complete-connector.yaml (001-plugins.yaml) and
# charts/flyte-binary/values.yaml (enabled_plugins), v1.16.8.
DEFAULT_PLUGINS = ["container", "sidecar", "k8s-array", "connector-service", "echo"]
DEFAULT_FOR_TASK_TYPES = {"container": "container", "container_array": "k8s-array", "sidecar": "sidecar"}
# flyteplugins/go.mod, v1.16.8: github.com/ray-project/kuberay/ray-operator v1.5.1.
KUBERAY = "1.5.1"
# ray.go mergeCustomPodSpec calls MergeOverlayPodSpecOntoBase from v1.15.1 (commit 49a2dd63d6, PR #6262).
MINIMUM_FLYTE = "1.15.1"


@pytest.mark.parametrize("path, keys", [("deploy/sandbox-config.yaml", ["tasks"]),
                                        ("deploy/flyte-binary-values.yaml", ["enabled_plugins", "tasks"])])
def test_deploy_config_enables_ray_and_keeps_the_defaults(path, keys):
    """Config files replace lists, so the defaults must be repeated beside `ray`."""
    plugins = functools.reduce(dict.__getitem__, keys, yaml.safe_load((ROOT / path).read_text()))["task-plugins"]
    assert plugins["enabled-plugins"] == DEFAULT_PLUGINS + ["ray"]
    assert plugins["default-for-task-types"] == {**DEFAULT_FOR_TASK_TYPES, "ray": "ray"}


def test_readme_gives_the_versions_and_the_file_the_backend_needs():
    readme = (ROOT / "README.md").read_text()
    assert f"kuberay/kuberay-operator --version {KUBERAY}" in readme
    assert f"The Flyte backend must be {MINIMUM_FLYTE} or later" in readme
    assert "cp deploy/sandbox-config.yaml ~/.flyte/sandbox/config.yaml" in readme
