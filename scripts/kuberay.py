"""A small Python model of KubeRay's operator: the pods it makes of a RayJob (as scripts/flyte_backend.py gives it).

It follows ray-project/kuberay v1.5.1 (the version Flyte 1.16's Ray plugin is built against), ray-operator/
controllers/ray/...: common/pod.go (DefaultHeadPodTemplate, DefaultWorkerPodTemplate with its wait-gcs-ready init
container, BuildPod, setMissingRayStartParams, generateRayStartCommand, convertParamMap, setInitContainerEnvVars,
setContainerEnvVars, addEmptyDir for /dev/shm, initLivenessAndReadinessProbe);
common/job.go (BuildJobSubmitCommand, GetSubmitterTemplate); rayjob_controller.go (configureSubmitterContainer:
SubmissionMode K8sJobMode, which Flyte's RayJobs get); utils/util.go (GetContainerCommand, GenerateHeadServiceName,
FetchHeadServiceURL). Pods are dicts shaped as Kubernetes' (`env` entries may hold `valueFrom`: resolve them where
the pod runs). The operator cannot run here; when it changes, change the model, citing the new tag.
"""

import copy
import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import yaml

from scripts.flyte_backend import quantity

VERSION = "v1.5.1"
NAMESPACE = "flytesnacks-development"  # the backend's: <project>-<domain>
HEAD_PORT, DASHBOARD_PORT, METRICS_PORT, AGENT_LISTEN_PORT = 6379, 8265, 8080, 52365  # utils/constant.go
HEAD_GROUP = "headgroup"  # RayNodeHeadGroupLabelValue
# BaseWgetHealthCommand with its ports and paths (initLivenessAndReadinessProbe).
_WGET_HEALTH = "wget --tries 1 -T {timeout} -q -O- http://localhost:{port}/{path} | grep success"
RAYLET_HEALTH = _WGET_HEALTH.format(timeout=2, port=AGENT_LISTEN_PORT, path="api/local_raylet_healthz")
GCS_HEALTH = _WGET_HEALTH.format(timeout=10, port=DASHBOARD_PORT, path="api/gcs_healthz")


@dataclass(frozen=True)
class Pod:
    name: str
    labels: Dict[str, str]
    container: dict  # the Ray container (or the submitter's): image, command, args, env, resources
    init_containers: List[dict]
    shm_limit: Optional[str]  # the /dev/shm emptyDir's sizeLimit (medium Memory); None: no such volume
    readiness: Optional[str]  # the readiness probe's bash command


@dataclass(frozen=True)
class Cluster:
    """The RayCluster a RayJob creates, named as the operator names it (random parts given)."""

    rayjob: str  # the RayJob's name
    suffix: str  # GenerateRayClusterName's 5 random characters

    @property
    def name(self) -> str:
        return f"{self.rayjob}-{self.suffix}"

    @property
    def head_service(self) -> str:
        """GenerateHeadServiceName (RayClusterCRD)."""
        return f"{self.name}-head-svc"

    @property
    def fqdn(self) -> str:
        """GenerateFQDNServiceName: how workers and the submitter reach the head."""
        return f"{self.head_service}.{NAMESPACE}.svc.cluster.local"


def head_pod(job: dict, cluster: Cluster, pod_name: str) -> Pod:
    """DefaultHeadPodTemplate + BuildPod for the head group."""
    params = _missing_params(job["head"]["rayStartParams"], head=True, cluster=cluster)
    return _build(job["head"]["pod"], pod_name, {"ray.io/cluster": cluster.name, "ray.io/group": HEAD_GROUP},
                  params, cluster, head=True, init_containers=[])


def worker_pods(job: dict, cluster: Cluster, pod_names: Dict[str, List[str]]) -> List[Pod]:
    """DefaultWorkerPodTemplate + BuildPod for each replica of each worker group (pod_names: group -> names)."""
    pods = []
    for group in job["workers"]:
        for name in pod_names[group["groupName"]]:
            template = group["pod"]["containers"][0]
            wait = {"name": "wait-gcs-ready", "image": template["image"], "command": _bash(),
                    "args": [_WAIT_GCS.format(address=cluster.fqdn, port=HEAD_PORT)],
                    "env": template.get("env", []) + _init_env(cluster),
                    "resources": {"limits": {"cpu": "200m", "memory": "256Mi"},
                                  "requests": {"cpu": "200m", "memory": "256Mi"}}}
            params = _missing_params(group["rayStartParams"], head=False, cluster=cluster)
            pods.append(_build(group["pod"], name, {"ray.io/cluster": cluster.name, "ray.io/group": group["groupName"]},
                               params, cluster, head=False, init_containers=[wait]))
    return pods


def submitter_pod(job: dict, cluster: Cluster, pod_name: str, job_id: str) -> Pod:
    """The K8s Job's pod in K8sJobMode: the backend's submitter template (the task's own pod) with the submit
    command, as configureSubmitterContainer sets it when the template's container has no command."""
    container = copy.deepcopy(job["submitter"]["pod"]["containers"][0])
    dashboard = f"{cluster.fqdn}:{DASHBOARD_PORT}"  # Status.DashboardURL (FetchHeadServiceURL)
    if not container.get("command"):
        container["command"] = _bash("e")
        container["args"] = [" ".join(submit_command(job, f"http://{dashboard}", job_id))]
    container["env"] = container.get("env", []) + [
        {"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "RAY_DASHBOARD_ADDRESS", "value": dashboard},
        {"name": "RAY_JOB_SUBMISSION_ID", "value": job_id}]
    return Pod(pod_name, {}, container, [], None, None)


def submit_command(job: dict, address: str, job_id: str) -> List[str]:
    """BuildJobSubmitCommand (K8sJobMode): submit unless submitted already, then follow the job's logs."""
    command = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then",
               "ray", "job", "submit", "--address", address, "--no-wait"]
    if job.get("runtimeEnvYAML"):  # getRuntimeEnvJson: the YAML as JSON, Go-quoted (strconv.Quote)
        command += ["--runtime-env-json", json.dumps(json.dumps(yaml.safe_load(job["runtimeEnvYAML"]),
                                                                separators=(",", ":")))]
    command += ["--submission-id", job_id, "--", job["entrypoint"].strip(), ";", "fi", ";",
                "ray", "job", "logs", "--address", address, "--follow", job_id]
    return command


# DefaultWorkerPodTemplate's init container script, as it is in the operator.
_WAIT_GCS = """
					SECONDS=0
					while true; do
						if (( SECONDS <= 120 )); then
							if ray health-check --address {address}:{port} > /dev/null 2>&1; then
								echo "GCS is ready."
								break
							fi
							echo "$SECONDS seconds elapsed: Waiting for GCS to be ready."
						else
							if ray health-check --address {address}:{port}; then
								echo "GCS is ready. Any error messages above can be safely ignored."
								break
							fi
							echo "$SECONDS seconds elapsed: Still waiting for GCS to be ready."
						fi
						sleep 5
					done
				"""


def _bash(options: str = "") -> List[str]:
    """utils.GetContainerCommand, without ENABLE_LOGIN_SHELL (off by default): `/bin/bash -c<options> --`."""
    return ["/bin/bash", f"-c{options}", "--"]


def _missing_params(params: Dict[str, str], head: bool, cluster: Cluster) -> Dict[str, str]:
    """setMissingRayStartParams."""
    params = dict(params)
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
    else:
        params.setdefault("address", f"{cluster.fqdn}:{HEAD_PORT}")
    params.setdefault("metrics-export-port", str(METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(AGENT_LISTEN_PORT))
    return params


def ray_start_command(params: Dict[str, str], resources: dict, head: bool) -> str:
    """generateRayStartCommand: num-cpus from the CPU limit (else request) and memory from the memory limit where
    not given (rounded up, as Quantity.Value()), num-gpus from an nvidia.com/gpu limit; flags by convertParamMap."""
    params = dict(params)
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    cpu = limits.get("cpu") or requests.get("cpu")
    if "num-cpus" not in params and cpu and quantity(cpu):
        params["num-cpus"] = str(math.ceil(quantity(cpu)))
    if "memory" not in params and limits.get("memory") and quantity(limits["memory"]):
        params["memory"] = str(math.ceil(quantity(limits["memory"])))
    if "num-gpus" not in params and limits.get("nvidia.com/gpu") and quantity(limits["nvidia.com/gpu"]):
        params["num-gpus"] = str(math.ceil(quantity(limits["nvidia.com/gpu"])))
    flags = ""
    for option in sorted(params):
        argument = params[option]
        if argument.lower() in ("true", "false") and option not in ("log-color", "include-dashboard"):
            flags += f" --{option} " if argument.lower() == "true" else ""
        else:
            flags += f" --{option}={argument} "
    return f"ray start --head {flags}" if head else f"ray start {flags}"


def _build(pod: dict, name: str, labels: Dict[str, str], params: Dict[str, str], cluster: Cluster, head: bool,
           init_containers: List[dict]) -> Pod:
    """BuildPod: /dev/shm, the generated command (the backend leaves the container no command or args), the env."""
    container = copy.deepcopy(pod["containers"][0])
    start = ray_start_command(params, container.get("resources", {}), head)
    assert not container.get("command") and not container.get("args"), "the backend clears them"
    container["command"], container["args"] = _bash(), [f"ulimit -n 65536; {start}"]
    env = container.get("env", [])
    if not head:
        env += _init_env(cluster)  # the same two variables
    env += [{"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}},
            {"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "RAY_NODE_TYPE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/group']"}}},
            {"name": "KUBERAY_GEN_RAY_START_CMD", "value": start}]
    names = {e["name"] for e in env}
    address = "127.0.0.1" if head else cluster.fqdn
    env += [e for e in ({"name": "RAY_PORT", "value": str(HEAD_PORT)},
                        {"name": "RAY_ADDRESS", "value": f"{address}:{HEAD_PORT}"},
                        {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"}) if e["name"] not in names]
    if head:
        env.append({"name": "RAY_USAGE_STATS_EXTRA_TAGS", "value": f"kuberay_version={VERSION};kuberay_crd=RayJob"})
    if "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE" not in names:
        env.append({"name": "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "value": "1"})
    container["env"] = env
    resources = container.get("resources", {})
    shm = resources.get("limits", {}).get("memory") or resources.get("requests", {}).get("memory")
    probe = " && ".join([RAYLET_HEALTH, GCS_HEALTH] if head else [RAYLET_HEALTH])
    return Pod(name, labels, container, init_containers, shm, probe)


def _init_env(cluster: Cluster) -> List[dict]:
    """setInitContainerEnvVars."""
    return [{"name": "FQ_RAY_IP", "value": cluster.fqdn}, {"name": "RAY_IP", "value": cluster.head_service}]

