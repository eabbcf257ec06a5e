"""Flyte 2's SDK (`flyte`) with RayMPIJob (flyteplugins.raympi): local runs are real worlds on an embedded Ray, their
drivers run as a user's are (`python`, `flyte run --local`), leaving nothing; the serialized task is what Flyte 2's
backend turns into the same Ray cluster as flytekit's task under Flyte 1's (scripts/flyte_backend.py, flyte2=True).
Its cluster path, `a0` as the Ray job's driver, is in tests/test_entrypoint.py."""

import json
import os
import sys
from pathlib import Path

import flyte
import pytest
from flyte._internal.runtime.task_serde import get_proto_task
from flyte.models import SerializationContext
from flyteidl2.plugins.ray_pb2 import RayJob
from flytekit import Resources
from google.protobuf.json_format import MessageToDict, ParseDict

from conftest import TESTS_DIR, run_leaving_nothing
from flyteplugins.raympi import RayMPIJob, RayMPITask
from scripts.flyte_backend import LOG_NOISE_ENV, MANAGED_LABELS, SUBMITTER_RESOURCES, backend_ray_job
from test_backend_conformance import MATRIX, resources_of, template_of

REPO = TESTS_DIR.parent
JOBS = TESTS_DIR / "job_code" / "flyte2_jobs.py"
BIN = Path(sys.executable).parent


def run_case(case: str, out: Path, warm: bool = True):
    """What flyte2_jobs.py's `case` wrote to `out`, and its run."""
    done = run_leaving_nothing([sys.executable, JOBS.name, case, str(out)], JOBS.parent, os.environ, warm=warm)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done


# --- Local runs ---------------------------------------------------------------------------------------------------

def test_local_runs_are_worlds_of_every_rank_running_the_coroutine_or_function(tmp_path):
    result, done = run_case("rows", tmp_path / "out.json")
    for body in ("rows", "rows_sync"):
        for x, call in zip((2, 3), result[body]):
            rows = [row.split(maxsplit=4) for row in call]
            assert [row[0] for row in rows] == ["0/2", "1/2"], body
            assert {row[2] for row in rows} == {str(3 * x)}, "allreduce of x * (rank + 1)"
            actions = {row[3] for row in rows}
            assert len(actions) == 1 and actions != {"-"}, "flyte.ctx() on every rank is the run's"
        first, second = ({row.split()[1] for row in call} for call in result[body])
        assert not first & second, "a fresh world for each call"
    assert not result["rows"][0][0].split(maxsplit=4)[4].startswith("ray::World"), "the first call starts its world"
    assert result["rows"][1][0].split(maxsplit=4)[4].startswith("ray::World"), "the next runs in a warm one"
    assert [row.split()[:1] + row.split()[2:4] for row in result["direct"]] == [["0/2", "3", "-"], ["1/2", "3", "-"]], \
        "a call outside a run is a world too, with no run context"
    assert "[rank 1] rank 1 of 2 reporting" in done.stderr + done.stdout, "peers' output, tagged"


def test_each_element_of_a_flyte_map_is_a_world_of_its_own(tmp_path):
    """flyte.map in a local run calls the task's execute for each element (sequentially), as a cluster runs each
    element as an action of its own: never a lone rank."""
    result, _ = run_case("mapped", tmp_path / "out.json")
    worlds = [[row.split() for row in element] for element in result["elements"]]
    assert [[row[0] for row in world] for world in worlds] == [["0/2", "1/2"]] * 3
    assert [{row[2] for row in world} for world in worlds] == [{"3"}, {"6"}, {"9"}], "allreduce of x * (rank + 1)"
    assert len({row[1] for world in worlds for row in world}) == 6, "fresh ranks for each element"


def test_a_failing_rank_fails_the_run_in_seconds_naming_it(tmp_path):
    result, _ = run_case("failing", tmp_path / "out.json", warm=False)
    assert "MPIRankError" in result["error"] and "MPI rank 1" in result["error"]
    assert "ValueError: rank 1 gives up" in result["error"]
    assert result["seconds"] < 15, f"the error came {result['seconds']:.1f} s after the rank failed"


def test_rank_0_alone_saves_the_checkpoint(tmp_path):
    result, _ = run_case("checkpointed", tmp_path / "out.json")
    assert result["saved"] == "saved by rank 0"
    assert "MPIRankError" in result["error"] and "MPI rank 1 cannot save the task's checkpoint" in result["error"]


def test_the_runs_report_has_rank_0s_tabs_and_the_mpi_worlds(tmp_path):
    result, _ = run_case("reported", tmp_path / "out.json")
    assert result["total"] == 6
    [report] = result["reports"]
    assert "the total is 6" in report, "what rank 0 logged"
    assert "2 MPI ranks on 1 node(s)" in report and "rank 1 of 2 reporting" in report, "the MPI world's tab"


@pytest.mark.parametrize("command", [["python", "examples/pi_flyte2.py"],
                                     ["flyte", "run", "--local", "examples/pi_flyte2.py", "estimate_pi",
                                      "--samples", "20000"]])
def test_the_example_runs_4_ranks(command):
    done = run_leaving_nothing([str(BIN / command[0]), *command[1:]], REPO, os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(4):
        assert f"rank {rank} of 4: pid" in done.stdout


# --- Serialization ------------------------------------------------------------------------------------------------

def flyte2_template_of(config: RayMPIJob, **environment):
    """The TaskTemplate Flyte 2's SDK serializes (as `flyte deploy` does) for a task of a RayMPIJob environment."""
    env = flyte.TaskEnvironment(name="serialized", plugin_config=config, **environment)

    @env.task
    def body(x: int) -> int:
        return x

    assert isinstance(body, RayMPITask)
    return get_proto_task(body, SerializationContext(version="v1", root_dir=TESTS_DIR))


def flyte2_environment(task_kwargs: dict) -> dict:
    """The TaskEnvironment arguments of flytekit's `@task` arguments in MATRIX."""
    environment = {}
    if "requests" in task_kwargs:
        requests = task_kwargs["requests"]
        environment["resources"] = flyte.Resources(cpu=requests.cpu, memory=requests.mem)
    if "environment" in task_kwargs:
        environment["env_vars"] = task_kwargs["environment"]
    return environment


@pytest.mark.parametrize("name", list(MATRIX))
def test_flyte2s_custom_is_flytekits_ray_job_as_flyteidl2_reads_it(name):
    make, task_kwargs, _ = MATRIX[name]
    config = make()
    custom = MessageToDict(flyte2_template_of(config, **flyte2_environment(task_kwargs)).custom)
    assert custom == MessageToDict(template_of(config, **task_kwargs).custom)
    assert MessageToDict(ParseDict(custom, RayJob())) == custom, "every field is flyteidl2's (no unknown one)"


@pytest.mark.parametrize("name", list(MATRIX))
def test_flyte2s_backend_gives_the_pods_the_resources_flytekits_get(name):
    make, task_kwargs, expected = MATRIX[name]
    job = backend_ray_job(flyte2_template_of(make(), **flyte2_environment(task_kwargs)), flyte2=True)
    assert resources_of(job) == expected


def test_flyte2s_backend_runs_a0_as_the_driver_beside_the_same_cluster():
    config = RayMPIJob(slots=2)
    job = backend_ray_job(flyte2_template_of(config), flyte2=True)
    flytekit_job = backend_ray_job(template_of(config))
    assert job["entrypoint"].startswith("a0 --inputs {{.input}} --outputs-path {{.outputPrefix}}")
    assert job["entrypoint"].endswith("mod test_flyte2 instance body"), "the task, as Flyte 2's resolver loads it"
    assert job["submissionMode"] == "K8sJobMode" and job["submitter"]["pod"]["containers"][0]["resources"] == \
        SUBMITTER_RESOURCES
    for group, flytekit_group in zip((job["head"], *job["workers"]), (flytekit_job["head"], *flytekit_job["workers"])):
        assert group["labels"] == MANAGED_LABELS
        assert group["rayStartParams"] == flytekit_group["rayStartParams"]
        container, flytekit_container = group["pod"]["containers"][0], flytekit_group["pod"]["containers"][0]
        assert all(variable in container["env"] for variable in LOG_NOISE_ENV)
        assert len({e["name"] for e in container["env"]}) == len(container["env"]), "an env name given twice"
        assert container["resources"] == flytekit_container["resources"]
    assert [w["replicas"] for w in job["workers"]] == [w["replicas"] for w in flytekit_job["workers"]]
    assert (job["shutdownAfterJobFinishes"], job["ttlSecondsAfterFinished"]) == \
        (flytekit_job["shutdownAfterJobFinishes"], flytekit_job["ttlSecondsAfterFinished"])


def test_flyte2_resources_are_checked_as_flytekits():
    from flyteplugins.raympi import Worker

    with pytest.raises(ValueError, match=r"worker.requests.cpu=\(1, 2\): a \(request, limit\) pair"):
        Worker(requests=flyte.Resources(cpu=(1, 2)))
    with pytest.raises(ValueError, match="worker.limits.gpu='A100:2' is not supported"):
        Worker(limits=flyte.Resources(gpu="A100:2"))
    with pytest.raises(ValueError, match="worker.requests.memory='4 GB': '4 GB' is not a Kubernetes quantity"):
        Worker(requests=flyte.Resources(memory="4 GB"))
    with pytest.raises(ValueError, match=r"worker.requests.memory='8Gi' is above worker.limits.memory='4Gi'"):
        RayMPIJob(worker=Worker(requests=flyte.Resources(memory="8Gi"), limits=flyte.Resources(memory="4Gi")))
    assert flyte2_template_of(RayMPIJob(worker=Worker(requests=flyte.Resources(cpu=2, memory="2Gi")), slots=2)).custom \
        == flyte2_template_of(RayMPIJob(worker=Worker(requests=Resources(cpu="2", mem="2Gi")), slots=2)).custom
