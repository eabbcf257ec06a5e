"""A Flyte task run on this machine as it is deployed: one podman container per pod of the KubeRay RayJob that the
Flyte backend makes of it, and an S3 object store (needs root).

`run_task` fast-registers the task's code as `pyflyte register` does (a tarball in the store), serializes the task,
writes its inputs where flytepropeller would, turns the task into a RayJob (scripts/flyte_backend.py) and that into
pods (scripts/kuberay.py), then runs them: each pod a container from the image, as the image's user, with an IP of
its own on a private network, its hostname, file system, /dev/shm (sized as KubeRay's emptyDir) and CPU and memory
limits, its `valueFrom` env resolved as the kubelet does; the head answers to its Service names; a worker runs its
init container first; the submitter (the K8s Job's pod) starts once every Ray pod passes its readiness probe. The
store is moto's S3 server, named and keyed as the Flyte sandbox's object store (`http://flyte-sandbox-minio.flyte:
9000`, keys in every pod's env, as the sandbox's default-env-vars put them). Pods share nothing with this host.

    python -m scripts.container_cluster examples/pi.py estimate_pi samples=100000
    python -m scripts.container_cluster examples/pi_flyte2.py estimate_pi samples=100000   # Flyte 2's, by its backend

Modelled, not real: Kubernetes, the Flyte backend and KubeRay's operator (their Go code, in the model modules).
`ulimit -n 65536` fails in these containers (this machine's hard limit is lower): Ray runs with the limit it has.
"""

import argparse
import asyncio
import importlib
import json
import math
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from flyte._code_bundle.bundle import build_code_bundle
from flyte._internal.runtime.convert import convert_from_native_to_inputs
from flyte._internal.runtime.task_serde import get_proto_task
from flyte.models import CodeBundle, SerializationContext
from flyteidl.core import errors_pb2, literals_pb2
from flyteidl2.core.execution_pb2 import ErrorDocument
from flyteidl2.task.common_pb2 import Outputs
from flytekit import FlyteContextManager
from flytekit.configuration import (DataConfig, FastSerializationSettings, ImageConfig, S3Config,
                                    SerializationSettings)
from flytekit.core.base_task import PythonTask
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.type_engine import TypeEngine
from flytekit.core.utils import write_proto_to_file
from flytekit.tools.fast_registration import fast_package
from flytekit.tools.translator import get_serializable

from scripts import kuberay
from scripts.flyte_backend import Execution, Flyte2Execution, backend_ray_job, quantity
from scripts.images import node_image, podman, s3_image

SUBNET = "10.214.{}"
STORE_HOST, STORE_PORT = "flyte-sandbox-minio.flyte", 9000
STORE_KEYS = {"FLYTE_AWS_ACCESS_KEY_ID": "minio", "FLYTE_AWS_SECRET_ACCESS_KEY": "miniostorage"}
BUCKET = "my-s3-bucket"
READY_TIMEOUT = 240
# What an MPI world runs (Open MPI's launcher and daemon, Hydra's, and our ranks): none should outlive its task.
MPI_PROCESSES = ("prterun", "prted", "mpiexec", "hydra_pmi_proxy", "raympi.runner")


@dataclass
class Finished:
    """A RayJob whose submitter ended: its exit status and output, each Ray pod's processes at that moment."""

    exit_code: int
    job_status: str  # the Ray job's, as KubeRay reads it from the dashboard (the submitter's exit status is not it)
    logs: str
    mpi_left: Dict[str, List[str]]  # pod name -> its MPI processes still there 15 s after the submitter ended
    dashboard_open: bool  # whether the head's dashboard answered a client without a token
    ready_s: float  # from the first pod's start until every Ray pod was ready
    submitted_s: float  # the submitter's run: submit, the job, its end


@dataclass
class TaskRun:
    """A task's run as deployed: what the submitter did, and what the task left in the object store."""

    finished: Finished
    outputs: Optional[Any]  # outputs.pb (flytekit's LiteralMap, Flyte 2's Outputs), or None
    error: Optional[str]  # error.pb's message, or None
    deck: Optional[str]  # deck.html (Flyte 2: report.html), or None
    execution: Execution


class ContainerCluster:
    """A private network with the object store on it. On exit every container on it is removed, then the network and
    this host's files of the store."""

    def __enter__(self) -> "ContainerCluster":
        taken = set(podman("network", "ls", "--format", "{{.Name}}").stdout.split())
        index = next(i for i in range(1, 250) if f"raympi-{i}" not in taken)
        self.network, self.subnet, self._last_ip = f"raympi-{index}", SUBNET.format(index), 9
        podman("network", "create", "--subnet", f"{self.subnet}.0/24", self.network)
        self._local = tempfile.mkdtemp(prefix="raympi-store-")
        try:
            self.store_port = self._start_store()
            self.files = _store_access(self.store_port, self._local)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        shutil.rmtree(self._local, ignore_errors=True)
        listed = podman("ps", "--all", "--filter", f"network={self.network}", "--format", "{{.Names}}", check=False)
        for name in listed.stdout.split():
            podman("rm", "--force", "--time", "0", name, check=False)
        podman("network", "rm", "--force", self.network, check=False)

    @property
    def pod_env(self) -> tuple:
        """The sandbox's default-env-vars for the object store (complete.yaml, v1.16.8)."""
        return (("FLYTE_AWS_ENDPOINT", f"http://{STORE_HOST}:{STORE_PORT}"), *STORE_KEYS.items())

    def run_task(self, task, inputs: Dict[str, Any], image: str, code: Path,
                 pod_template_env: Optional[Dict[str, str]] = None,
                 timeout: float = 600) -> TaskRun:
        """Register `task` (its module under `code`) fast, as `pyflyte register` does, and run it with `inputs`;
        `pod_template_env`: what the task's pod template puts in its `primary` container."""
        execution = Execution(BUCKET, _random(20), platform_env=self.pod_env,
                              template_env=tuple((pod_template_env or {}).items()))
        with tempfile.TemporaryDirectory(prefix="raympi-register-") as work:
            archive = fast_package(code, work)
            distribution = f"s3://{BUCKET}/fast/{Path(archive).name}"
            self.files.put_data(str(archive), distribution)
            settings = SerializationSettings(
                image_config=ImageConfig.auto(img_name=image), version=execution.name,
                fast_serialization_settings=FastSerializationSettings(enabled=True, destination_dir=".",
                                                                      distribution_location=distribution))
            template = get_serializable(OrderedDict(), settings, task).template.to_flyte_idl()
            ctx = FlyteContextManager.current_context()
            types = task.python_interface.inputs
            literals = TypeEngine.dict_to_literal_map(ctx, inputs, {name: types[name] for name in inputs})
            write_proto_to_file(literals.to_flyte_idl(), f"{work}/inputs.pb")
            self.files.put_data(f"{work}/inputs.pb", execution.inputs)
        return self._run(backend_ray_job(template, execution=execution), execution, timeout, "deck.html",
                         literals_pb2.LiteralMap, errors_pb2.ErrorDocument)

    def run_flyte2_task(self, task, inputs: Dict[str, Any], image: str, code: Path, timeout: float = 600) -> TaskRun:
        """Deploy a Flyte 2 `task` as `flyte deploy` does, its code bundled (a tarball of `code` in the store), and run
        it with `inputs` as the root action of a run of Flyte 2's backend. `code` holds the task's module where the
        directory it was imported from does (the SDK names the module relative to that directory)."""
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        execution = Flyte2Execution(BUCKET, _random(20), platform_env=self.pod_env, started=started)
        with tempfile.TemporaryDirectory(prefix="raympi-deploy-") as work:
            bundle = asyncio.run(build_code_bundle(code, dryrun=True, copy_bundle_to=Path(work), copy_style="all"))
            remote = f"s3://{BUCKET}/fast/{Path(bundle.tgz).name}"
            self.files.put_data(bundle.tgz, remote)
            module = sys.modules[task.func.__module__]
            imported_from = Path(module.__file__).parents[module.__name__.count(".")]
            context = SerializationContext(version=bundle.computed_version, root_dir=imported_from,
                                           code_bundle=CodeBundle(computed_version=bundle.computed_version, tgz=remote))
            template = get_proto_task(task, context)
            template.container.image = image  # as the environment's image names it once built and pushed
            Path(work, "inputs.pb").write_bytes(
                asyncio.run(convert_from_native_to_inputs(task.interface, **inputs)).proto_inputs.SerializeToString())
            self.files.put_data(f"{work}/inputs.pb", execution.inputs)
        return self._run(backend_ray_job(template, execution=execution, flyte2=True), execution, timeout,
                         "report.html", Outputs, ErrorDocument)

    def _run(self, job: dict, execution: Execution, timeout: float, report: str, outputs_type,
             error_type) -> TaskRun:
        """Run the RayJob; what the task left under its output prefix: outputs, error document and report."""
        finished = self.run_rayjob(job, timeout)
        found = {name: self.read(f"{execution.output_prefix}/{name}") for name in ("outputs.pb", "error.pb", report)}
        return TaskRun(
            finished,
            outputs=found["outputs.pb"] and outputs_type.FromString(found["outputs.pb"]),
            error=found["error.pb"] and error_type.FromString(found["error.pb"]).error.message,
            deck=found[report] and found[report].decode(), execution=execution)

    def read(self, remote: str) -> Optional[bytes]:
        """A file in the object store, or None."""
        if not self.files.exists(remote):
            return None
        with tempfile.TemporaryDirectory() as work:
            self.files.get_data(remote, f"{work}/file")
            return Path(work, "file").read_bytes()

    def run_rayjob(self, job: dict, timeout: float = 600) -> Finished:
        """Run a RayJob as KubeRay does: the cluster's pods, the submitter once they are ready; then remove them."""
        rayjob = f"rmpi-{_random(5)}"
        cluster = kuberay.Cluster(rayjob, _random(5))
        head = kuberay.head_pod(job, cluster, f"{cluster.name}-head-{_random(5)}")
        workers = kuberay.worker_pods(job, cluster, {group["groupName"]: [
            f"{cluster.name}-{group['groupName']}-worker-{_random(5)}" for _ in range(group["replicas"])]
            for group in job["workers"]})
        job_id = f"{rayjob}-{_random(5)}"  # GenerateRayJobId
        submitter = kuberay.submitter_pod(job, cluster, f"{rayjob}-{_random(5)}", job_id)
        pods = [head, *workers]
        try:
            started = time.monotonic()
            self._start(head, aliases=[cluster.head_service, cluster.fqdn])
            for worker in workers:
                self._start(worker)
            self._wait_ready(pods)
            ready = time.monotonic()
            ran = self._container(submitter, submitter.container, self._ip(), detach=False, timeout=timeout)
            submitted = time.monotonic()
            status = podman("exec", head.name, "python", "-c", "from ray.job_submission import JobSubmissionClient; "
                            f"print(JobSubmissionClient('http://127.0.0.1:{kuberay.DASHBOARD_PORT}')"
                            f".get_job_status('{job_id}').value)", check=False).stdout
            anonymous = podman("exec", "--env=RAY_AUTH_TOKEN=", head.name, "python", "-c", "import urllib.request; "
                               f"urllib.request.urlopen('http://127.0.0.1:{kuberay.DASHBOARD_PORT}/api/jobs/')",
                               check=False)
            return Finished(ran.returncode, status.split()[-1] if status.strip() else "", ran.stdout + ran.stderr,
                            _mpi_left(pods), anonymous.returncode == 0, ready - started, submitted - ready)
        finally:
            for pod in [*pods, submitter]:
                for name in [pod.name, *(f"{pod.name}-{init['name']}" for init in pod.init_containers)]:
                    podman("rm", "--force", "--time", "0", name, check=False)

    def _start(self, pod: kuberay.Pod, aliases=()) -> None:
        ip = self._ip()
        for init in pod.init_containers:  # to its end, with the pod's network identity, before the Ray container
            done = self._container(pod, init, ip, name=f"{pod.name}-{init['name']}", detach=False,
                                   timeout=READY_TIMEOUT)
            if done.returncode:
                raise RuntimeError(f"{pod.name}: init container {init['name']} failed:\n{done.stdout}{done.stderr}")
        started = self._container(pod, pod.container, ip, aliases=aliases)
        if started.returncode:
            raise RuntimeError(f"{pod.name} did not start: {started.stderr}")

    def _container(self, pod: kuberay.Pod, container: dict, ip: str, name: Optional[str] = None,
                   aliases=(), detach: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Start one of a pod's containers (`detach`), or run it to its end. Its env goes in a file only root reads,
        not on a command line."""
        limits = container.get("resources", {}).get("limits", {})
        options = [f"--name={name or pod.name}", f"--hostname={pod.name}", f"--network={self.network}", f"--ip={ip}",
                   *(f"--network-alias={alias}" for alias in aliases),
                   *([f"--cpus={float(quantity(limits['cpu']))}"] if "cpu" in limits else []),
                   *([f"--memory={math.ceil(quantity(limits['memory']))}"] if "memory" in limits else []),
                   *([f"--shm-size={math.ceil(quantity(pod.shm_limit))}"] if pod.shm_limit else [])]
        argv = container["command"] + container["args"]
        with tempfile.NamedTemporaryFile("w", prefix="raympi-env-") as env_file:
            env_file.write("".join(f"{k}={v}\n" for k, v in _resolve(container, pod, ip).items()))
            env_file.flush()
            return podman("run", "--detach" if detach else "--attach=stdout", *options, f"--env-file={env_file.name}",
                          f"--entrypoint={json.dumps(argv[:1])}", container["image"], *argv[1:], check=False,
                          timeout=timeout)

    def _wait_ready(self, pods: List[kuberay.Pod]) -> None:
        """Until each pod's readiness probe passes: the RayCluster is ready, and KubeRay creates the submitter."""
        deadline = time.monotonic() + READY_TIMEOUT
        for pod in pods:
            while podman("exec", pod.name, "bash", "-c", pod.readiness, check=False).returncode:
                if time.monotonic() > deadline:
                    logs = podman("logs", pod.name, check=False)
                    raise TimeoutError(f"{pod.name} not ready within {READY_TIMEOUT} s:\n"
                                       f"{(logs.stdout + logs.stderr)[-4000:]}")
                time.sleep(1)

    def _start_store(self) -> int:
        port, ip = _free_port(), self._ip()
        podman("run", "--detach", f"--name={self.network}-store", f"--network={self.network}", f"--ip={ip}",
               f"--network-alias={STORE_HOST}", f"--publish=127.0.0.1:{port}:{STORE_PORT}",
               # Else moto takes the host name's first label for a bucket (virtual-hosted style).
               f"--env=MOTO_S3_CUSTOM_ENDPOINTS=http://{STORE_HOST}:{STORE_PORT}", s3_image(),
               "/opt/s3/bin/moto_server", "-H", ip, "-p", str(STORE_PORT))
        deadline = time.monotonic() + 60
        while True:  # until it answers: then the bucket exists
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT"))
                return port
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the object store did not answer within 60 s") from None
                time.sleep(0.5)

    def _ip(self) -> str:
        self._last_ip += 1
        return f"{self.subnet}.{self._last_ip}"


def _store_access(port: int, local: str) -> FileAccessProvider:
    """flytekit's file access to the store from this host (its local files under `local`)."""
    s3 = S3Config(endpoint=f"http://127.0.0.1:{port}", access_key_id=STORE_KEYS["FLYTE_AWS_ACCESS_KEY_ID"],
                  secret_access_key=STORE_KEYS["FLYTE_AWS_SECRET_ACCESS_KEY"])
    return FileAccessProvider(local, f"s3://{BUCKET}/host",
                              data_config=DataConfig(s3=s3))


def _resolve(container: dict, pod: kuberay.Pod, ip: str) -> Dict[str, str]:
    """The container's env as the kubelet gives it: downward API fields and resource fields (divisor 1: CPU rounded
    up to cores, memory in bytes) resolved; a later entry of a name wins."""
    fields = {"status.podIP": ip, "metadata.name": pod.name,
              **{f"metadata.labels['{k}']": v for k, v in pod.labels.items()}}
    env = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in source:
            env[entry["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in source:
            side, resource = source["resourceFieldRef"]["resource"].split(".")
            env[entry["name"]] = str(math.ceil(quantity(container["resources"][side][resource])))
    return env


def _mpi_left(pods: List[kuberay.Pod], within: float = 15) -> Dict[str, List[str]]:
    """Each pod's live MPI processes (command lines) once they are gone, or `within` seconds have passed. Not zombies:
    a process whose parent ended before it is left to the pod's PID 1, `ray start` as KubeRay runs it, which reaps
    none (as in a Kubernetes pod without an init), and keeps only its pid."""
    deadline = time.monotonic() + within
    while True:
        left = {pod.name: [line.split(maxsplit=1)[1] for line in podman("top", pod.name, "state", "args",
                                                                          check=False).stdout.splitlines()[1:]
                           if not line.startswith("Z") and any(word in line for word in MPI_PROCESSES)]
                for pod in pods}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _random(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="the task's module, under the current directory (the code's root)")
    parser.add_argument("task", help="the task's name in that module")
    parser.add_argument("inputs", nargs="*", help="name=value, the value as JSON (else a string)")
    parser.add_argument("--flavour", default="openmpi", choices=["openmpi", "mpich", "impi"])
    args = parser.parse_args(argv)
    root = Path.cwd()
    sys.path.insert(0, str(root))
    module = importlib.import_module(".".join(args.file.resolve().relative_to(root).with_suffix("").parts))
    inputs = {}
    for pair in args.inputs:
        name, value = pair.split("=", 1)
        try:
            inputs[name] = json.loads(value)
        except json.JSONDecodeError:
            inputs[name] = value
    image = node_image(args.flavour)
    task = getattr(module, args.task)
    with ContainerCluster() as cluster:
        run = (cluster.run_task if isinstance(task, PythonTask) else cluster.run_flyte2_task)(task, inputs, image, root)
    print(run.finished.logs)
    print(f"outputs: {run.outputs}" if run.outputs else f"failed: {run.error}")
    sys.exit(0 if run.outputs else 1)


if __name__ == "__main__":
    main()
