"""scripts/kuberay.py against KubeRay v1.5.1's own unit tests (ray-operator/controllers/ray/common/pod_test.go): the
`ray start` commands its operator generates, for the inputs those tests give."""

from scripts import kuberay

CLUSTER = kuberay.Cluster("raycluster", "sample")  # named so that its head service is raycluster-sample-head-svc


def pod_job(head_params: dict, worker_params: dict, resources: dict) -> dict:
    """A RayJob (as scripts/flyte_backend.py shapes it) whose head and one worker have `resources`."""
    container = {"name": "ray", "image": "rayproject/ray", "env": [], "resources": resources}
    return {"head": {"rayStartParams": head_params, "pod": {"containers": [container]}},
            "workers": [{"groupName": "small-group", "replicas": 1, "rayStartParams": worker_params,
                         "pod": {"containers": [container]}}]}


def test_generate_ray_start_command_as_its_unit_test_expects():
    """TestGenerateRayStartCommand, "WorkerNode with GPU": flags as convertParamMap writes them, spaces included."""
    assert kuberay.ray_start_command({}, {"limits": {"nvidia.com/gpu": "1"}}, head=False) == "ray start  --num-gpus=1 "


def test_build_pod_commands_as_its_unit_test_expects():
    """TestBuildPod_WithNoCPULimits (num-cpus from the CPU request, memory from the limit, num-gpus from the GPU
    limit): head and worker args, compared as sorted words (its splitAndSort)."""
    memory = "1073741824"
    head = pod_job({}, {"port": "6379"}, {"requests": {"cpu": "2", "memory": memory}, "limits": {"memory": memory}})
    workers = pod_job({}, {"port": "6379"}, {"requests": {"cpu": "2", "memory": memory},
                                             "limits": {"memory": memory, "nvidia.com/gpu": "3"}})
    head_pod = kuberay.head_pod(head, CLUSTER, "raycluster-sample-head-0")
    (worker_pod,) = kuberay.worker_pods(workers, CLUSTER, {"small-group": ["raycluster-sample-worker-0"]})
    assert head_pod.container["command"] == ["/bin/bash", "-c", "--"]
    assert sorted(head_pod.container["args"][0].split()) == sorted(
        "ulimit -n 65536; ray start --head --block --dashboard-agent-listen-port=52365 --memory=1073741824 "
        "--num-cpus=2 --metrics-export-port=8080 --dashboard-host=0.0.0.0".split())
    assert sorted(worker_pod.container["args"][0].split()) == sorted(
        "ulimit -n 65536; ray start --block --dashboard-agent-listen-port=52365 --memory=1073741824 --num-cpus=2 "
        "--num-gpus=3 --address=raycluster-sample-head-svc.flytesnacks-development.svc.cluster.local:6379 "
        "--port=6379 --metrics-export-port=8080".split()), "the test's namespace is `default`, ours the backend's"
