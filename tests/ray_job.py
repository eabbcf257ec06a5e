"""Run a Flyte task the way the Flyte backend's Ray plugin and KubeRay do: its serialized container
args, with the templates filled in, joined by spaces, as the entrypoint of a Ray job on a cluster. flytekit's tasks
as Flyte 1's backend does (run_task), Flyte 2's as Flyte 2's (run_flyte2_task)."""

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

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
    status, logs = submit(dashboard_url, entrypoint(task, data_dir), working_dir, timeout, headers, env_vars)
    written = _outputs_file(data_dir, status, logs,
                            lambda path: load_proto_from_file(errors_pb2.ErrorDocument, path).error.message)
    outputs = LiteralMap.from_flyte_idl(load_proto_from_file(literals_pb2.LiteralMap, written))
    types = output_types or task.python_interface.outputs
    return Finished(outputs, TypeEngine.literal_map_to_kwargs(ctx, outputs, types), logs)


def submit(dashboard_url: str, entrypoint_: str, working_dir: Path, timeout: float = 240,
           headers: Optional[dict] = None, env_vars: Optional[Dict[str, str]] = None) -> Tuple[JobStatus, str]:
    """Run a Ray job of `entrypoint_` in `working_dir` (with `env_vars`) to its end: its status and log."""
    client = JobSubmissionClient(dashboard_url, headers=headers)
    job = client.submit_job(entrypoint=entrypoint_,
                            runtime_env={"working_dir": str(working_dir), "env_vars": env_vars or {}})
    status = _wait(client, job, timeout)
    return status, client.get_job_logs(job)


def flyte2_entrypoint(task, data_dir: Path, working_dir: Path) -> str:
    """The RayJob entrypoint that Flyte 2's backend makes for a Flyte 2 `task`, its inputs at data_dir/inputs.pb,
    outputs under data_dir/outputs (flyteorg/flyte main 6fadb90d65): actions/k8s/client.go substituteRunStartTime
    (RFC 3339), pluginmachinery/core/template/template.go Render (the data paths; no previous checkpoint is `""`;
    {{.runName}} and {{.actionName}} stay: `a0` reads them from its env), ray.go constructRayJob (the args joined
    by spaces, an empty one not quoted)."""
    from flyte._internal.runtime.task_serde import get_proto_task
    from flyte.models import SerializationContext

    container = get_proto_task(task, SerializationContext(version="test", root_dir=working_dir)).container
    filled = {
        "{{.input}}": str(data_dir / "inputs.pb"),
        "{{.outputPrefix}}": str(data_dir / "outputs"),
        "{{.rawOutputDataPrefix}}": str(data_dir / "raw"),
        "{{.checkpointOutputPrefix}}": str(data_dir / "checkpoint"),
        "{{.prevCheckpointPrefix}}": '""',
        "{{.runStartTime}}": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return " ".join(filled.get(arg, arg) for arg in container.args)


def run_flyte2_task(dashboard_url: str, task, inputs: Dict[str, Any], data_dir: Path, working_dir: Path,
                    timeout: float = 240) -> "Finished":
    """Submit a Flyte 2 `task` with `inputs` as the Ray job Flyte 2's backend makes; its outputs (literals, and
    Python values as o0, o1, ...) and log, or JobFailed with the error `a0` wrote."""
    import asyncio

    from flyte._internal.runtime import convert, io

    (data_dir / "outputs").mkdir(parents=True, exist_ok=True)  # object storage needs none; a local path does
    asyncio.run(io.upload_inputs(asyncio.run(convert.convert_from_native_to_inputs(task.interface, **inputs)),
                                 str(data_dir / "inputs.pb")))
    # The pod env of every Flyte 2 task, which the head's (the driver's) has: flyteorg/flyte main 6fadb90d65,
    # executor/pkg/plugin/task_exec_metadata.go (envVars) and flytek8s/k8s_resource_adds.go (GetExecutionEnvVars).
    env = {"ACTION_NAME": "a0", "RUN_NAME": "run0", "_U_RUN_BASE": str(data_dir / "run"), "_U_ORG_NAME": "local",
           "FLYTE_INTERNAL_EXECUTION_PROJECT": "flytesnacks", "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development"}
    status, logs = submit(dashboard_url, flyte2_entrypoint(task, data_dir, working_dir), working_dir, timeout,
                          env_vars=env)
    written = _outputs_file(data_dir, status, logs, lambda path: asyncio.run(io.load_error(path)).message)
    outputs = asyncio.run(io.load_outputs(written))
    values = asyncio.run(convert.convert_outputs_to_native(task.interface, outputs))
    values = values if isinstance(values, tuple) else (values,)
    return Finished(outputs, {f"o{i}": value for i, value in enumerate(values)}, logs)


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


def _outputs_file(data_dir: Path, status: JobStatus, logs: str, error_message) -> str:
    """The outputs.pb the job wrote under data_dir/outputs; else JobFailed with the message of its error.pb (read
    by `error_message`), or with the job's status."""
    written = data_dir / "outputs"
    if (written / "error.pb").exists():
        raise JobFailed(error_message(str(written / "error.pb")), logs)
    if status != JobStatus.SUCCEEDED or not (written / "outputs.pb").exists():
        raise JobFailed(f"job {status}, outputs: {sorted(p.name for p in written.glob('*'))}", logs)
    return str(written / "outputs.pb")


def _wait(client: JobSubmissionClient, job: str, timeout: float) -> JobStatus:
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise TimeoutError(f"Ray job {job} still {status} after {timeout} s:\n{client.get_job_logs(job)[-3000:]}")
        time.sleep(1)
    return status
