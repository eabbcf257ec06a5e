"""A small Python model of the Flyte backend's Go code: what it makes of a `ray` task (the KubeRay RayJob).

The model encodes flyteorg/flyte v1.16.8 (commit 51877f899c9f95e0cb5efe90444eb0c6c6ea48a9); every function
below names the Go function it follows (flyteplugins/go/tasks/...):
- plugins/k8s/ray/ray.go: BuildResource, constructRayJob, buildHeadPodTemplate, buildWorkerPodTemplate,
  mergeCustomPodSpec; plugins/k8s/ray/config.go: defaultConfig;
- pluginmachinery/flytek8s/pod_helper.go: MergeOverlayPodSpecOntoBase (mergo v0.3.13, WithOverride, WithAppendSlice);
- pluginmachinery/flytek8s/container_helper.go: BuildRawContainer, AdjustOrDefaultResource,
  SanitizeGPUResourceRequirements;
- flytepropeller's part before the plugin (`Execution`): pluginmachinery/core/template/template.go render (the args'
  placeholders), flytek8s/k8s_resource_adds.go DecorateEnvVars (the pod env), the data paths of
  flytepropeller/pkg/controller (executor.go constructWorkflowMetadataPrefix, nodes/task/taskexec_context.go
  ComputeRawOutputPrefix, pluginmachinery/ioutils: NewShardedRawOutputPath, NewBase36PrefixShardSelector);
and Kubernetes' admission rule for container resources (k8s.io/kubernetes, pkg/apis/core/validation/validation.go,
ValidateResourceRequirements).

Flyte 2's backend (flyteorg/flyte `main` at 6fadb90d65af26f4db908ec1c5f5af546a3e4299, tag v2.0.43: module
github.com/flyteorg/flyte/v2, the same paths) is modelled by `backend_ray_job(..., flyte2=True)`: its ray.go reads the
custom as flyteidl2's RayJob (the same fields, plus per-group extended resources that a RayMPIJob never sets), appends
logNoiseDisablingEnvVars to both groups' env, labels their pods flyte.org/managed, joins the args without quoting
empty ones, sets the submission mode (K8sJobMode unless configured) and builds a bare submitter pod
(buildSubmitterPodTemplate); `Flyte2Execution` models where a run's data lives and the env of its pods.
MergeOverlayPodSpecOntoBase, AdjustOrDefaultResource and BuildRawContainer are the same as v1.16.8's there (mergo
v0.3.16). The Go backend cannot run here; when it changes, change the model, citing the new tag. The merge modelled
here is the one from v1.15.1 on (PR #6262); v1.14.0 to v1.15.0 took only the k8s_pod's resources, and before v1.14.0
the Ray IDL had no k8s_pod (the README says what that means for a RayMPIJob).
"""

import functools
import re
from dataclasses import dataclass
from typing import Optional

from flyteidl.core.tasks_pb2 import Resources as IdlResources
from flyteidl.plugins.ray_pb2 import RayJob
from flyteidl2.plugins.ray_pb2 import RayJob as Flyte2RayJob
from google.protobuf.json_format import MessageToDict, ParseDict

from flytekitplugins.raympi.quantities import quantity

# docker/sandbox-bundled/manifests/complete.yaml (and complete-connector.yaml), v1.16.8: 100-inline-config.yaml
# task_resources.defaults (its limits are 0: no cap).
SANDBOX_TASK_DEFAULTS = {"cpu": "500m", "memory": "1Gi"}
# ray/config.go defaultConfig, v1.16.8; KEEPS_CLUSTERS: a backend whose operator set shutdownAfterJobFinishes false.
STOCK = {"shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 3600}
KEEPS_CLUSTERS = {"shutdownAfterJobFinishes": False, "ttlSecondsAfterFinished": 3600}
# config.go Defaults.{HeadNode,WorkerNode}.StartParameters; the keys ray.go adds where missing, with config.go's
# IncludeDashboard, DashboardHost, IPAddress and EnableUsageStats defaults.
DEFAULT_START_PARAMETERS = {"disable-usage-stats": "true"}
HEAD_PARAMETERS = {"include-dashboard": "true", "node-ip-address": "$MY_POD_IP", "dashboard-host": "0.0.0.0",
                   "disable-usage-stats": "true"}
WORKER_PARAMETERS = {"node-ip-address": "$MY_POD_IP", "disable-usage-stats": "true"}
# ray.go buildHeadPodTemplate / buildWorkerPodTemplate (MEMORY_* do point at cpu there).
POD_IP = {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
HEAD_ENV = [POD_IP]
WORKER_ENV = [
    {"name": "RAY_DISABLE_DOCKER_CPU_WARNING", "value": "1"},
    {"name": "TYPE", "value": "worker"},
    *({"name": name, "valueFrom": {"resourceFieldRef": {"containerName": "ray-worker", "resource": resource}}}
      for name, resource in (("CPU_REQUEST", "requests.cpu"), ("CPU_LIMITS", "limits.cpu"),
                             ("MEMORY_REQUESTS", "requests.cpu"), ("MEMORY_LIMITS", "limits.cpu"))),
    {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    POD_IP,
]
PORTS = [{"name": "redis", "containerPort": 6379}, {"name": "head", "containerPort": 10001},
         {"name": "dashboard", "containerPort": 8265}]
PRE_STOP = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}
# Flyte 2's ray.go: logNoiseDisablingEnvVars (both groups), the label of every pod it manages (flytek8s
# ManagedLabelKey), submitterDefaultResourceRequirements, the submission mode's default (config SubmissionMode "").
LOG_NOISE_ENV = [{"name": "RAY_COLOR_PREFIX", "value": "0"}, {"name": "RAY_DATA_DISABLE_PROGRESS_BARS", "value": "1"}]
MANAGED_LABELS = {"flyte.org/managed": "true"}
SUBMITTER_RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "200Mi"}}
SUBMISSION_MODE = "K8sJobMode"
# SanitizeGPUResourceRequirements renames flytekit's "gpu" to the configured GPU name (default nvidia.com/gpu).
K8S_NAMES = {"CPU": "cpu", "MEMORY": "memory", "GPU": "nvidia.com/gpu", "EPHEMERAL_STORAGE": "ephemeral-storage"}


# --- Kubernetes quantities and admission --------------------------------------------------------------------


def overcommit_allowed(name: str) -> bool:
    """helper.IsOvercommitAllowed: native resources (no domain, or kubernetes.io) other than hugepages."""
    return ("/" not in name or "kubernetes.io/" in name) and not name.startswith("hugepages-")


def admission_errors(container: dict) -> list:
    """ValidateResourceRequirements: a request at most its limit; for resources that cannot be overcommitted
    (extended ones such as nvidia.com/gpu) a limit that is set and equals the request."""
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    errors = []
    for name, request in requests.items():
        limit = limits.get(name)
        if limit is None:
            if not overcommit_allowed(name):
                errors.append(f"{container['name']}: {name}: Limit must be set for non overcommitable resources")
        elif not overcommit_allowed(name) and quantity(request) != quantity(limit):
            errors.append(f"{container['name']}: requests.{name}={request} must be equal to limit of {limit}")
        elif quantity(request) > quantity(limit):
            errors.append(f"{container['name']}: requests.{name}={request} must be <= limit of {limit}")
    return errors


# --- The backend: task container, merge, RayJob ---------------------------------------------------------------

def adjust_or_default(request, limit, default):
    """container_helper.go AdjustOrDefaultResource (no platform limit): the request falls back to the limit, then
    the platform default; the limit to the request; a request above its limit is lowered to it."""
    request = request or limit or default
    limit = limit or request
    return (limit if quantity(request) > quantity(limit) else request), limit


def base36_shard(key: str) -> str:
    """ioutils NewBase36PrefixShardSelector (2 characters): FNV-32a of `key` picks one of 36 x 36."""
    digest = 0x811C9DC5
    for byte in key.encode():
        digest = ((digest ^ byte) * 0x01000193) % 2**32
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return alphabet[digest % 1296 // 36] + alphabet[digest % 36]


@dataclass(frozen=True)
class Execution:
    """One attempt of a task node as flytepropeller runs it: where its data lives and the env it gives the pod."""

    bucket: str  # the metadata and raw data container (the sandbox's: my-s3-bucket)
    name: str  # the execution's name
    project: str = "flytesnacks"
    domain: str = "development"
    node: str = "n0"
    attempt: int = 0
    platform_env: tuple = ()  # plugins.k8s default-env-vars: (name, value) pairs, e.g. the object store's
    template_env: tuple = ()  # the env of the task's pod template's `primary` container, merged into the task's

    @property
    def data_dir(self) -> str:
        """executor.go constructWorkflowMetadataPrefix + workflow_status.go ConstructNodeDataDir."""
        return f"s3://{self.bucket}/metadata/propeller/{self.project}-{self.domain}-{self.name}/{self.node}/data"

    @property
    def inputs(self) -> str:
        return f"{self.data_dir}/inputs.pb"

    @property
    def output_prefix(self) -> str:
        return f"{self.data_dir}/{self.attempt}"

    @property
    def raw_output_prefix(self) -> str:
        """ComputeRawOutputPrefix: `<rawoutput-prefix>/<shard>/<exec>-<node>-<attempt>`, the shard two base-36
        characters picked by FNV-32a of that id (NewBase36PrefixShardSelector). Ids over the Ray plugin's 47
        characters are hashed by the backend: not modelled, keep names short."""
        unique = f"{self.name}-{self.node}-{self.attempt}"
        assert len(unique) <= 47, f"{unique!r}: longer than the backend's unhashed ids"
        return f"s3://{self.bucket}/data/{base36_shard(unique)}/{unique}"

    def placeholders(self) -> dict:
        """What the args' placeholders render as (lower-cased names); no previous checkpoint on a first attempt
        renders as the two characters `""`."""
        return {"input": self.inputs, "outputprefix": self.output_prefix, "rawoutputdataprefix":
                self.raw_output_prefix, "checkpointoutputprefix": f"{self.raw_output_prefix}/_flytecheckpoints",
                "prevcheckpointprefix": '""'}

    def render(self, args: list) -> list:
        """template.go render: each placeholder the args use (case-insensitive); unknown ones stay."""
        values = self.placeholders()
        return [re.sub(r"{{\s*[.$](\w+)\s*}}", lambda m: values.get(m[1].lower(), m[0]), arg) for arg in args]

    def ids(self, task_name: str, version: str) -> dict:
        """k8s_resource_adds.go DecorateEnvVars: the execution's and task's ids."""
        return {"FLYTE_INTERNAL_EXECUTION_WORKFLOW": f"{self.project}:{self.domain}:wf",
                "FLYTE_INTERNAL_EXECUTION_ID": self.name, "FLYTE_INTERNAL_EXECUTION_PROJECT": self.project,
                "FLYTE_INTERNAL_EXECUTION_DOMAIN": self.domain, "FLYTE_ATTEMPT_NUMBER": str(self.attempt),
                "FLYTE_INTERNAL_TASK_PROJECT": self.project, "FLYTE_INTERNAL_TASK_DOMAIN": self.domain,
                "FLYTE_INTERNAL_TASK_NAME": task_name, "FLYTE_INTERNAL_TASK_VERSION": version}

    def env(self, task_name: str, version: str) -> list:
        """pod_helper.go ApplyFlytePodConfiguration: the pod template's env, then the ids, then default-env-vars."""
        pairs = [*self.template_env, *self.ids(task_name, version).items(), *self.platform_env]
        return [{"name": k, "value": v} for k, v in pairs]


@dataclass(frozen=True)
class Flyte2Execution(Execution):
    """The root action (a0) of a Flyte 2 run, as Flyte 2's backend runs it (flyteorg/flyte main 6fadb90d65): the run's
    data under the store's prefix (runs/service/run_service.go buildInputPrefix, buildRunOutputBase), the action's
    outputs, raw data and checkpoints under `<shard>/<run base>/a0/<attempt>` (executor/pkg/plugin/
    task_exec_context.go ComputeActionOutputPath: attempts count from 1; the shard of the TaskAction's
    `<namespace>/<run>-a0`, actions/k8s/client.go buildTaskActionName), and the pod env of
    executor/pkg/plugin/task_exec_metadata.go (NewTaskExecutionMetadata) with k8s_resource_adds.go's ids."""

    started: str = "2026-01-01T00:00:00Z"  # the run's start, RFC 3339 (actions/k8s/client.go substituteRunStartTime)
    namespace: str = "flyte"  # where the backend creates TaskActions (its configured namespace)
    attempt: int = 1

    @property
    def run_base(self) -> str:
        return f"s3://{self.bucket}/{self.project}/{self.domain}/{self.name}/"

    @property
    def inputs(self) -> str:
        return f"s3://{self.bucket}/{self.project}/{self.domain}/{self.name}/inputs/inputs.pb"

    @property
    def output_prefix(self) -> str:
        shard = base36_shard(f"{self.namespace}/{self.name}-a0")
        return f"s3://{self.bucket}/{shard}/{self.project}/{self.domain}/{self.name}/a0/{self.attempt}"

    @property
    def raw_output_prefix(self) -> str:
        return self.output_prefix  # NewRawOutputPaths(ctx, outputPrefix)

    def placeholders(self) -> dict:
        """Also the run's start; {{.runName}} and {{.actionName}} stay (`a0` reads them from the env)."""
        return {**super().placeholders(), "runstarttime": self.started}

    def ids(self, task_name: str, version: str) -> dict:
        """The action's own variables, then the ids (no workflow: a context variable Flyte 2 does not set)."""
        own = {"ACTION_NAME": "a0", "RUN_NAME": self.name, "_U_RUN_BASE": self.run_base, "_U_ORG_NAME": "local"}
        return {**own, **{k: v for k, v in super().ids(task_name, version).items()
                          if k != "FLYTE_INTERNAL_EXECUTION_WORKFLOW"}}


def task_container(template, platform: dict, execution: Optional[Execution] = None) -> dict:
    """container_helper.go BuildRawContainer + AddFlyteCustomizationsToContainer(MergeExistingResources): the task's
    container, cpu and memory always resolved, ephemeral storage and GPU when the task names them; with an
    execution, its args rendered and its env decorated (ToK8sPodSpec)."""
    container = template.container
    asked, capped = ({K8S_NAMES[IdlResources.ResourceName.Name(e.name)]: e.value for e in entries}
                     for entries in (container.resources.requests, container.resources.limits))
    names = ["cpu", "memory"] + [n for n in ("ephemeral-storage", "nvidia.com/gpu") if n in asked or n in capped]
    resolved = {n: adjust_or_default(asked.get(n), capped.get(n), platform.get(n)) for n in names}
    env = [{"name": e.key, "value": e.value} for e in container.env]
    if execution is not None:
        env += execution.env(template.id.name, template.id.version)
    return {
        "name": "primary",
        "image": container.image,
        "args": execution.render(container.args) if execution else list(container.args),
        "env": env,
        "resources": {"requests": {n: r for n, (r, _) in resolved.items()},
                      "limits": {n: lim for n, (_, lim) in resolved.items()}},
    }


def mergo(dst, src):
    """mergo v0.3.13 Merge(&dst, src, WithOverride, WithAppendSlice) on JSON-shaped values: structs and maps merged
    key by key, slices appended, a non-empty scalar overriding."""
    if isinstance(src, dict):
        return {**dst, **{key: mergo(dst[key], value) if key in dst else value for key, value in src.items()}}
    if isinstance(src, list):
        return dst + src
    return src if src not in ("", 0, None) else dst


def merge_overlay_pod_spec(base: dict, overlay: dict) -> dict:
    """pod_helper.go MergeOverlayPodSpecOntoBase: pod fields merged; each base container merged with the overlay
    containers of its name; overlay containers of other names dropped."""
    merged = mergo(base, overlay)
    merged["containers"] = [
        functools.reduce(mergo, [o for o in overlay.get("containers", []) if o["name"] == c["name"]], c)
        for c in base["containers"]
    ]
    return merged


def node_pod(base: dict, name: str, env: list, k8s_pod, **extra) -> dict:
    """ray.go buildHeadPodTemplate / buildWorkerPodTemplate: the task container renamed, its args cleared, the
    backend's env and ports appended; then mergeCustomPodSpec with the custom's k8s_pod."""
    container = {**base, "name": name, "args": [], "env": base["env"] + env, "ports": PORTS, **extra}
    pod = {"containers": [container]}
    return merge_overlay_pod_spec(pod, MessageToDict(k8s_pod.pod_spec)) if k8s_pod.HasField("pod_spec") else pod


def start_params(custom, added: dict) -> dict:
    """ray.go BuildResource / constructRayJob: the custom's rayStartParams (else config.go's defaults), the
    backend's keys added only where missing."""
    return {**added, **(dict(custom) or DEFAULT_START_PARAMETERS)}


def backend_ray_job(template, ray_config: dict = STOCK, platform: dict = SANDBOX_TASK_DEFAULTS,
                    execution: Optional[Execution] = None, flyte2: bool = False) -> dict:
    """ray.go BuildResource + constructRayJob: the KubeRay RayJob spec built for a task template (for `execution`:
    what the backend creates when it runs; without one, the args keep their placeholders). `flyte2`: Flyte 2's
    backend, for a template of Flyte 2's SDK (see the module's docstring)."""
    # AllowUnknownFields (v1), UnmarshalStruct (Flyte 2)
    job = ParseDict(MessageToDict(template.custom), Flyte2RayJob() if flyte2 else RayJob(), ignore_unknown_fields=True)
    base = task_container(template, platform, execution)
    shutdown, ttl = ray_config["shutdownAfterJobFinishes"], ray_config["ttlSecondsAfterFinished"]
    if job.shutdown_after_job_finishes:
        shutdown, ttl = True, job.ttl_seconds_after_finished
    head = job.ray_cluster.head_group_spec
    extra_env = LOG_NOISE_ENV if flyte2 else []
    built = {
        "entrypoint": " ".join(arg if arg != "" or flyte2 else "''" for arg in base["args"]),
        "shutdownAfterJobFinishes": shutdown,
        "ttlSecondsAfterFinished": ttl,
        "runtimeEnvYAML": job.runtime_env_yaml,
        "head": {"rayStartParams": start_params(head.ray_start_params, HEAD_PARAMETERS),
                 "pod": node_pod(base, "ray-head", HEAD_ENV + extra_env, head.k8s_pod)},
        "workers": [
            {"groupName": group.group_name,
             "replicas": group.replicas,
             "minReplicas": min(group.min_replicas, group.replicas),
             "maxReplicas": max(group.max_replicas, group.replicas),
             "rayStartParams": start_params(group.ray_start_params, WORKER_PARAMETERS),
             "pod": node_pod(base, "ray-worker", WORKER_ENV + extra_env, group.k8s_pod, lifecycle=PRE_STOP)}
            for group in job.ray_cluster.worker_group_spec
        ],
        # buildSubmitterPodTemplate: the task's pod as it is (KubeRay gives its container the submit command).
        "submitter": {"pod": {"containers": [base]}},
    }
    if flyte2:
        for group in (built["head"], *built["workers"]):
            group["labels"] = MANAGED_LABELS
        built["submissionMode"] = SUBMISSION_MODE
        built["submitter"] = {"pod": {"containers": [{"name": "ray-job-submitter", "image": base["image"],
                                                      "resources": SUBMITTER_RESOURCES}],
                                      "restartPolicy": "Never", "enableServiceLinks": False}}
    return built
