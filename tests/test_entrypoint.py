"""The Ray-job entrypoint path: a cluster started with `ray start` (head without CPUs, a worker node with
the world's slots, the mpi runtime env registered as the serialized spec's pods have it), the task's
serialized container args submitted through Ray's job submission API, inputs and outputs as files."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from flytekit import map_task
from flytekit.models.literals import LiteralMap

from conftest import TESTS_DIR, command_line, marked_processes, wait_until_gone
from ray_job import JobFailed, run_flyte2_task, run_task, wait_until_accepting
from raympi.registration import registration_env

JOB_CODE = TESTS_DIR / "job_code"
sys.path.insert(0, str(JOB_CODE))  # as the job's working_dir puts it: the task module is `mpi_jobs`
import flyte2_jobs  # noqa: E402
import mpi_jobs  # noqa: E402


def ray_start(env: dict, marker: str, *args: str, attempts: int = 3) -> None:
    """`ray start` one node; a failed start is cleared (the processes it left, found by `marker`) and tried again.
    On a loaded machine a raylet may not register within the 30 s Ray gives it (hard-coded: Ray 2.60's
    `ray/_private/node.py`, `Node.__init__`, `raylet_start_wait_time_s`). Fixed agent ports spare the raylet
    waiting for them to report random ones, which a loaded machine can also make it give up on."""
    for _ in range(attempts):
        before = marked_processes(marker)
        agent_ports = [f"--{name}-port={free_port()}" for name in
                       ("dashboard-agent-grpc", "dashboard-agent-listen", "metrics-export", "runtime-env-agent")]
        done = subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--disable-usage-stats",
                               "--node-ip-address=127.0.0.1", *args,
                               *agent_ports], env=env, capture_output=True, text=True, timeout=180)
        if not done.returncode:
            return
        left = marked_processes(marker) - before
        for pid in left:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
        assert not wait_until_gone(left), f"a failed ray start's processes survive SIGKILL: {left}"
    raise RuntimeError(f"ray start {' '.join(args)} failed {attempts} times, the last:\n"
                       f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dashboard_url: str
    marker: str  # "NAME=value" in the environment of every process the cluster started

    def mpi_processes(self) -> set:
        return {pid for pid in marked_processes(self.marker)
                if any(name in command_line(pid) for name in ("prterun", "prted", "raympi.runner"))}


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine; every process it started ends with it."""
    marker = f"RAYMPI_TEST_CLUSTER={uuid.uuid4().hex}"
    temp_dir = tempfile.mkdtemp(prefix="rmpi-", dir="/tmp")  # short: Ray's socket paths must fit
    env = {**os.environ, **registration_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **dict([marker.split("=")])}
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = free_port(), free_port()
    try:
        ray_start(env, marker, "--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={temp_dir}",
                  "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}")
        wait_until_accepting(f"http://127.0.0.1:{dashboard_port}")  # the head's start done before the worker's
        ray_start(env, marker, f"--address=127.0.0.1:{port}", "--num-cpus=2")
        yield Cluster(f"http://127.0.0.1:{dashboard_port}", marker)
    finally:
        for pid in marked_processes(marker):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_task_runs_as_a_ray_job_and_its_file_output_reaches_the_output_location(cluster, tmp_path):
    finished = run_task(cluster.dashboard_url, mpi_jobs.one_node, {"x": 3, "fail_on_rank": -1},
                        tmp_path / "report", JOB_CODE)
    rows = finished.outputs["o0"]
    assert [row.split()[0] for row in rows] == ["0/2", "1/2"]
    assert {row.split()[3] for row in rows} == {"9"}, "allreduce of 3 * (rank + 1)"
    report = finished.literals.literals["o1"]
    assert report.scalar.blob.uri.startswith(str(tmp_path / "report" / "raw")), "rank 0 uploaded it"
    downstream = run_task(cluster.dashboard_url, mpi_jobs.read_report, LiteralMap({"report": report}),
                          tmp_path / "downstream", JOB_CODE)
    assert downstream.outputs["o0"].splitlines()[1:] == rows
    assert "[rank 1] rank 1 of 2 reporting" in finished.logs, "peer output is in the job's log, tagged"
    assert wait_until_gone(cluster.mpi_processes()) == set()


def test_a_failing_rank_fails_the_job_with_its_error(cluster, tmp_path):
    with pytest.raises(JobFailed) as caught:
        run_task(cluster.dashboard_url, mpi_jobs.one_node, {"x": 3, "fail_on_rank": 1}, tmp_path, JOB_CODE)
    assert "MPI rank 1" in caught.value.message
    assert "RuntimeError: rank 1 failed on purpose" in caught.value.message
    assert "in report_world" in caught.value.message, "the peer's traceback"
    assert wait_until_gone(cluster.mpi_processes()) == set()


def test_a_map_tasks_element_runs_as_a_world_in_its_job(cluster, tmp_path):
    """The backend runs each element of an ArrayNode of a `ray` task as a RayJob of its own, with the element's
    index in its pods' env (flytepropeller v1.16.8, array/execution_context.go, newArrayExecutionContext:
    BATCH_JOB_ARRAY_INDEX_VAR_NAME=FLYTE_K8S_ARRAY_INDEX; ray.go keeps the pod env), its entrypoint
    `pyflyte-map-execute` with all the inputs."""
    index = {"BATCH_JOB_ARRAY_INDEX_VAR_NAME": "FLYTE_K8S_ARRAY_INDEX", "FLYTE_K8S_ARRAY_INDEX": "1"}
    finished = run_task(cluster.dashboard_url, map_task(mpi_jobs.sum_of_ranks), {"x": [5, 6, 7]}, tmp_path,
                        JOB_CODE, env_vars=index, output_types=mpi_jobs.sum_of_ranks.python_interface.outputs)
    assert finished.outputs["o0"].split()[:2] == ["6", "13"], "element 1: x = 6 on 2 ranks (6 + 7)"
    assert wait_until_gone(cluster.mpi_processes()) == set()


def test_a_flyte2_task_runs_as_the_ray_job_of_flyte2s_backend(cluster, tmp_path):
    """Flyte 2's `a0` is the job's driver: it reads the inputs, runs the world (rank 0 in a Ray worker on the worker
    node) and writes the outputs through Flyte 2's storage."""
    finished = run_flyte2_task(cluster.dashboard_url, flyte2_jobs.rows, {"x": 3}, tmp_path, JOB_CODE)
    rows = [row.split() for row in finished.outputs["o0"]]
    assert [row[0] for row in rows] == ["0/2", "1/2"]
    assert {row[2] for row in rows} == {"9"}, "allreduce of 3 * (rank + 1)"
    assert {row[3] for row in rows} == {"a0"}, "flyte.ctx() on every rank is the action's"
    assert "[rank 1] rank 1 of 2 reporting" in finished.logs, "peer output is in the job's log, tagged"
    assert wait_until_gone(cluster.mpi_processes()) == set()


def test_a_failing_rank_fails_the_flyte2_job_naming_it(cluster, tmp_path):
    with pytest.raises(JobFailed) as caught:
        run_flyte2_task(cluster.dashboard_url, flyte2_jobs.failing, {"rank": 1, "failed_at": str(tmp_path / "at")},
                        tmp_path, JOB_CODE)
    assert "MPI rank 1" in caught.value.message and "ValueError: rank 1 gives up" in caught.value.message
    assert wait_until_gone(cluster.mpi_processes()) == set()
