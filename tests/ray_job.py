"""Run a Flyte task the way the Flyte backend's Ray plugin and KubeRay do: its serialized container
args, with the templates filled in, joined by spaces, as the entrypoint of a Ray job on a cluster."""

import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Union

from flyteidl.core import errors_pb2, literals_pb2
from flytekit import FlyteContextManager
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.core.type_engine import TypeEngine
from flytekit.core.utils import load_proto_from_file, write_proto_to_file
from flytekit.models.literals import LiteralMap
from ray.job_submission import JobStatus, JobSubmissionClient

SETTINGS = SerializationSettings(image_config=ImageConfig.auto(img_name="raympi:test"))


def entrypoint(task, data_dir: Path) -> str:
    """The RayJob entrypoint for `task` with its inputs at data_dir/inputs.pb, outputs under data_dir."""
    container = task.get_container(SETTINGS)  # as get_serializable takes it; a map task's too
    filled = {
        "{{.input}}": str(data_dir / "inputs.pb"),
        "{{.outputPrefix}}": str(data_dir / "outputs"),
        "{{.rawOutputDataPrefix}}": str(data_dir / "raw"),
        "{{.checkpointOutputPrefix}}": str(data_dir / "checkpoint"),
        "{{.prevCheckpointPrefix}}": str(data_dir / "prev-checkpoint"),
    }
    # An empty argument (a map task's bound `vars`) quoted: flyteplugins' ray.go (v1.16.8, constructRayJob).
    return " ".join(filled.get(arg, arg) or "''" for arg in container.args)


def run_task(dashboard_url: str, task, inputs: Union[Dict[str, Any], LiteralMap], data_dir: Path,
             working_dir: Path, timeout: float = 240, headers: Optional[dict] = None,
             env_vars: Optional[Dict[str, str]] = None, output_types: Optional[dict] = None) -> "Finished":
    """Submit `task` with `inputs` (Python values, or literals such as an upstream task's outputs) as a
    Ray job; its outputs (as literals and as Python values, of `output_types` if given, else the task's) and its
    log, or JobFailed. `headers` authenticate the client (a cluster with token authentication); `env_vars` are
    the driver's, as the backend sets them in the pods' env (a map task's element index)."""
    ctx = FlyteContextManager.current_context()
    types = task.python_interface.inputs
    literals = inputs if isinstance(inputs, LiteralMap) else TypeEngine.dict_to_literal_map(
        ctx, inputs, {name: types[name] for name in inputs})
    data_dir.mkdir(parents=True, exist_ok=True)
    write_proto_to_file(literals.to_flyte_idl(), str(data_dir / "inputs.pb"))
    client = JobSubmissionClient(dashboard_url, headers=headers)
    job = client.submit_job(entrypoint=entrypoint(task, data_dir),
                            runtime_env={"working_dir": str(working_dir), "env_vars": env_vars or {}})
    status = _wait(client, job, timeout)
    logs, written = client.get_job_logs(job), data_dir / "outputs"
    if (written / "error.pb").exists():
        raise JobFailed(load_proto_from_file(errors_pb2.ErrorDocument, str(written / "error.pb")).error.message, logs)
    if status != JobStatus.SUCCEEDED or not (written / "outputs.pb").exists():
        raise JobFailed(f"job {status}, outputs: {sorted(p.name for p in written.glob('*'))}", logs)
    outputs = LiteralMap.from_flyte_idl(load_proto_from_file(literals_pb2.LiteralMap, str(written / "outputs.pb")))
    types = output_types or task.python_interface.outputs
    return Finished(outputs, TypeEngine.literal_map_to_kwargs(ctx, outputs, types), logs)


def wait_until_accepting(dashboard_url: str, timeout: float = 120, headers: Optional[dict] = None) -> None:
    """Block until the cluster runs jobs: `ray start` returns before the head's job agent is up."""
    client = JobSubmissionClient(dashboard_url, headers=headers)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _wait(client, client.submit_job(entrypoint="true"), timeout) == JobStatus.SUCCEEDED:
                return
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(1)


class Finished(NamedTuple):
    literals: LiteralMap
    outputs: Dict[str, Any]
    logs: str


class JobFailed(Exception):
    def __init__(self, message: str, logs: str):
        super().__init__(message)
        self.message, self.logs = message, logs


def _wait(client: JobSubmissionClient, job: str, timeout: float) -> JobStatus:
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise TimeoutError(f"Ray job {job} still {status} after {timeout} s:\n{client.get_job_logs(job)[-3000:]}")
        time.sleep(1)
    return status
