"""Every minor Ray release that setup.cfg allows, each in a venv of its own (`make test` builds .venv-ray<release>
beside .venv, holding that Ray over .venv's other packages; .venv's Ray is the newest and runs every other test):
the Ray contract (tests/test_ray_contract.py) on each, whole worlds on the oldest, and a Ray below the range
refused at once."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raympi.ray_internals import TESTED_RAY, TESTED_REQUIREMENT

REPO = Path(__file__).resolve().parent.parent
(OLDEST, NEWEST) = TESTED_RAY
# The newest is this suite's own venv.
MINORS = [(OLDEST[0], minor) for minor in range(OLDEST[1], NEWEST[1])]
# What the oldest release runs besides the contract: a RayMPIJob local run, a rank that raises, the `mpi` runtime env
# with mpi_init() on every rank, a 2-node world on the namespace cluster (the newest runs them all in this suite).
WHOLE_WORLDS = [
    "tests/test_flyte_tasks.py::test_every_rank_takes_part",
    "tests/test_flyte_tasks.py::test_peer_that_raises_fails_the_task_naming_the_rank",
    "tests/test_runtime_env.py::test_documented_pi_task_runs_on_four_ranks",
    "tests/test_runtime_env.py::test_peer_that_raises_fails_the_call_with_its_exception",
    "tests/test_multinode.py::test_ranks_run_on_the_reserved_worker_nodes_and_rank0s_file_reaches_the_driver",
]


def venv(minor) -> Path:
    """The venv of the newest patch of `minor` ((major, minor)) that `make test` built."""
    found = sorted(REPO.glob(f".venv-ray{minor[0]}.{minor[1]}.*"),
                   key=lambda path: int(path.name.rsplit(".", 1)[1]))
    assert found, f"no venv with Ray {minor[0]}.{minor[1]}: `make test` builds them (RAY_RELEASES in the Makefile)"
    return found[-1]


def pytest_in(minor, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv(minor) / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(700)
@pytest.mark.parametrize("minor", MINORS, ids=lambda minor: f"ray{minor[0]}.{minor[1]}")
def test_the_ray_contract_holds(minor):
    done = pytest_in(minor, "tests/test_ray_contract.py", timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert re.search(r"\b2[01] passed", done.stdout), done.stdout[-2000:]


@pytest.mark.timeout(1300)
def test_whole_worlds_run_on_the_oldest_ray():
    done = pytest_in(OLDEST, *WHOLE_WORLDS, timeout=1200)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert "passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


BELOW = (OLDEST[0], OLDEST[1] - 1)
REFUSED = (rf"raympi is tested with Ray {OLDEST[0]}\.{OLDEST[1]} to {NEWEST[0]}\.{NEWEST[1]} "
           rf"\({re.escape(TESTED_REQUIREMENT)}\), and this is Ray {BELOW[0]}\.{BELOW[1]}\.\d+")


def test_a_ray_below_the_range_is_refused_at_once_naming_it_by_the_driver_and_by_a_node():
    """The driver (raympi.init_ray, and placing a world on a Ray it connected to itself) and a node whose Ray has
    the plugin registered by hand (its setup of an `mpi` runtime env) each refuse it, in seconds, not a hang."""
    code = textwrap.dedent("""
        import json, os, ray, raympi
        from ray.util.placement_group import placement_group
        try:
            raympi.init_ray(num_cpus=1)
        except RuntimeError as error:
            print("init_ray:", error)
        os.environ["RAY_RUNTIME_ENV_PLUGINS"] = json.dumps([{"class": "raympi.plugin.MPIPlugin"}])
        ray.init(num_cpus=1, include_dashboard=False)
        group = placement_group([{"CPU": 1}])
        ray.get(group.ready(), timeout=60)
        try:
            raympi.placement(group, 1)
        except RuntimeError as error:
            print("placement:", error)
        try:
            ray.get(ray.remote(lambda: 1).options(num_cpus=0, runtime_env={"mpi": {"args": ["-n", "1"], "worker_entry": "os.getpid"}}).remote(),
                    timeout=120)
        except Exception as error:
            print("node:", type(error).__name__, error)
    """)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    done = subprocess.run([str(venv(BELOW) / "bin" / "python"), "-c", code], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr
    for who in ("init_ray", "placement"):
        assert re.search(rf"^{who}: {REFUSED}", done.stdout, re.MULTILINE), said[-4000:]
    assert re.search(rf"^node: RuntimeEnvSetupError.*{REFUSED}", done.stdout, re.MULTILINE | re.DOTALL), said[-4000:]


def test_the_newest_release_is_this_suites_own():
    import ray

    assert tuple(int(part) for part in ray.__version__.split(".")[:2]) == NEWEST, (
        f"this suite runs Ray {ray.__version__}, TESTED_RAY's newest is {NEWEST}: {sys.prefix}")
