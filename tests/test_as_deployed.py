"""RayMPIJob as users deploy it: the Dockerfile's image built here, each task fast-registered, serialized and run as
the Flyte backend (v1.16.8) and KubeRay (v1.5.1) run it, one container per pod, inputs and outputs in S3
(scripts/container_cluster.py says what is real and what is modelled); Flyte 2's tasks deployed with their code bundle
and run as Flyte 2's backend runs them. Needs root (podman)."""

import json
import secrets
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from flyteidl.core import literals_pb2

from conftest import TESTS_DIR
from scripts.container_cluster import ContainerCluster
from scripts.images import node_image, podman

ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR / "job_code"))  # as the fast-registered code's root puts it
import deployed_jobs  # noqa: E402
import flyte2_jobs  # noqa: E402
from examples import pi, pi_flyte2  # noqa: E402

pytestmark = pytest.mark.timeout(1800)  # an image built from nothing takes minutes


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """The code a user registers: the examples package and the test tasks' module, at its root."""
    root = tmp_path_factory.mktemp("code")
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for module in ("deployed_jobs.py", "flyte2_jobs.py", "failing_rank.py"):
        shutil.copy(TESTS_DIR / "job_code" / module, root)
    return root


@pytest.fixture(scope="module")
def cluster():
    with ContainerCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def image() -> str:
    return node_image("openmpi")


def strings(literal: literals_pb2.Literal) -> list:
    return [item.scalar.primitive.string_value for item in literal.collection.literals]


def assert_ran_cleanly(run) -> None:
    assert run.finished.job_status == "SUCCEEDED", run.finished.logs[-4000:]
    assert run.error is None
    assert run.finished.mpi_left == {name: [] for name in run.finished.mpi_left}, "an MPI process outlived the task"


def test_the_flagship_runs_its_ranks_two_on_each_worker_pod(cluster, image, code):
    run = cluster.run_task(pi.estimate_pi, {"samples": 20_000}, image, code)
    assert_ran_cleanly(run)
    estimate, ranks = run.outputs.literals["o0"].scalar.primitive.float_value, strings(run.outputs.literals["o1"])
    assert abs(estimate - 3.1416) < 0.05
    hosts = Counter(line.rsplit(" on ", 1)[1] for line in ranks)
    workers = [name for name in run.finished.mpi_left if "-worker-" in name]
    assert hosts == {workers[0]: 2, workers[1]: 2}, "two ranks in each worker container, none on the head"


def test_in_the_image_as_its_user_ranks_fork_from_a_template(image, tmp_path):
    """A local run in one container of the image (its user, uid 1000; Ray embedded): the first world's ranks start
    the template and every world's fork from it (tests/job_code/flavoured.py, case `forked`)."""
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    done = podman("run", "--rm", "--network=none", "--shm-size=1g", f"--volume={TESTS_DIR / 'job_code'}:/job:ro",
                  f"--volume={out}:/out", "--workdir=/job", "--env=RAYMPI_WARM_WORLDS=0", image,
                  "sh", "-c", "id -u && python flavoured.py forked /out/calls.json", timeout=600)
    assert done.stdout.splitlines()[0] == "1000"
    calls = json.loads((out / "calls.json").read_text())
    assert [{row.split()[4] for row in call} for call in calls] == len(calls) * [{"template"}]


def test_with_token_auth_a_file_rank_0_writes_lands_under_the_raw_output_prefix(cluster, image, code):
    """The pod env README's "Network and security" tells users to set (a pod template's `primary` container)."""
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    run = cluster.run_task(deployed_jobs.ranks, {"fail_on_rank": -1}, image, code, pod_template_env=token)
    assert_ran_cleanly(run)
    assert not run.finished.dashboard_open, "the cluster ran with token authentication"
    rows = strings(run.outputs.literals["o0"])
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "3"]
    assert {row.split()[2] for row in rows} == {"1000"}, "every rank as the image's user"
    uri = run.outputs.literals["o1"].scalar.blob.uri
    assert uri.startswith(run.execution.raw_output_prefix + "/"), uri
    assert cluster.read(uri).decode().splitlines() == rows


def test_a_rank_that_raises_fails_the_task_naming_it_and_leaves_no_mpi_process(cluster, image, code):
    """flytekit's entrypoint writes error.pb and exits 0 (only the AWS Batch plugin sets FLYTE_FAIL_ON_ERROR), so the
    Ray job succeeds; Flyte fails the node from error.pb (flytepropeller/pkg/controller/nodes/task/handler.go,
    Handler.ValidateOutput, v1.16.8)."""
    run = cluster.run_task(deployed_jobs.ranks, {"fail_on_rank": 3}, image, code)
    assert run.finished.job_status == "SUCCEEDED"
    assert run.outputs is None
    assert "MPI rank 3" in run.error and "RuntimeError: rank 3 failed on purpose" in run.error, \
        f"{run.error}\nThe Ray job's log ends:\n{run.finished.logs[-6000:]}"
    assert run.finished.mpi_left == {name: [] for name in run.finished.mpi_left}


def test_the_mpi_world_deck_is_uploaded(cluster, image, code):
    run = cluster.run_task(deployed_jobs.decked, {}, image, code)
    assert_ran_cleanly(run)
    assert run.deck is not None, "deck.html under the output prefix"
    assert "MPI world" in run.deck
    for row in strings(run.outputs.literals["o0"]):
        assert row.split()[1] in run.deck, "each rank's host"


def test_horovod_runs_across_two_worker_pods_in_the_open_mpi_image(cluster, image, code):
    run = cluster.run_task(deployed_jobs.horovod_ranks, {}, image, code)
    assert_ran_cleanly(run)
    rows = strings(run.outputs.literals["o0"])
    assert sorted(row.split()[:2] for row in rows) == [["0/2", "0"], ["1/2", "0"]]
    assert len({row.split()[2] for row in rows}) == 2, "one rank on each worker pod"


def test_mpich_image_runs_its_world_across_two_worker_pods(cluster, code):
    run = cluster.run_task(deployed_jobs.ranks_mpich, {}, node_image("mpich"), code)
    assert_ran_cleanly(run)
    hosts = Counter(row.split()[1] for row in strings(run.outputs.literals["o0"]))
    assert sorted(hosts.values()) == [2, 2]


def named(outputs) -> dict:
    """Flyte 2's outputs by name."""
    return {output.name: output.value for output in outputs.literals}


def test_the_flyte2_flagship_runs_as_flyte2s_backend_deploys_it_two_ranks_on_each_worker_pod(cluster, image, code):
    """`a0` as the Ray job's driver: the code bundle and inputs from the store, the outputs back there."""
    run = cluster.run_flyte2_task(pi_flyte2.estimate_pi, {"samples": 20_000}, image, code)
    assert_ran_cleanly(run)
    outputs = named(run.outputs)
    estimate, ranks = outputs["o0"].scalar.primitive.float_value, strings(outputs["o1"])
    assert abs(estimate - 3.1416) < 0.05
    assert {line.rsplit(" in run ", 1)[1] for line in ranks} == {run.execution.name}, "flyte.ctx() on every rank"
    hosts = Counter(line.split(" on ", 1)[1].split()[0] for line in ranks)
    workers = [name for name in run.finished.mpi_left if "-worker-" in name]
    assert hosts == {workers[0]: 2, workers[1]: 2}, "two ranks in each worker container, none on the head"


def test_a_failing_flyte2_rank_fails_the_run_naming_it_and_leaves_no_mpi_process(cluster, image, code):
    run = cluster.run_flyte2_task(flyte2_jobs.failing, {"rank": 1, "failed_at": "/tmp/failed-at"}, image, code)
    assert run.outputs is None
    assert "MPI rank 1" in run.error and "ValueError: rank 1 gives up" in run.error, \
        f"{run.error}\nThe Ray job's log ends:\n{run.finished.logs[-6000:]}"
    assert run.finished.mpi_left == {name: [] for name in run.finished.mpi_left}
