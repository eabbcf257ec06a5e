"""The benchmark harness runs end to end at tiny sizes and prints its table (no timing is checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import PHASES

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--repeats", "1", "--warmup", "0", "--launch-ranks", "2", "--scaling-ranks", "2", "--sizes-mib", "1",
        "--iterations", "2", "--steps", "2", "--nodes", "1", "2", "--repeated-ranks", "2"]
REPEATED = {f"{method}+{gap}s/2/launch" for method in ("mpirun", "ray", "raympijob", "raympijob_cold")
            for gap in (0, 1, 5)}
# The flavours section's own cases (Open MPI's plain mpirun launch is the launch section's).
FLAVOURS = {"mpirun_btl/2/bandwidth", *(f"{method}/2/{body}" for body in ("launch", "bandwidth") for method in
                                        ("mpiexec:mpich", "mpiexec:impi", "raympijob:openmpi", "raympijob:mpich",
                                         "raympijob:impi"))}


@pytest.mark.timeout(900)
def test_harness_measures_every_case_and_reports(tmp_path):
    command = [sys.executable, "-m", "benchmarks", *TINY, "--out", str(tmp_path)]
    segments = set(Path("/dev/shm").glob("sm_segment.*"))
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-5000:]
    assert set(Path("/dev/shm").glob("sm_segment.*")) - segments == set(), "Open MPI's shared memory was left behind"

    for heading in ("### Targets", "### Launch overhead", "### Allreduce bandwidth", "### Scaling", "### Horovod",
                    "### Repeated calls", "### MPI flavours", "### Multi-node"):
        assert heading in done.stdout
    assert (tmp_path / "table.md").read_text() in done.stdout
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")

    samples = json.loads((tmp_path / "results.json").read_text())["samples"]
    expected = {"mpirun/2/launch", "mpirun_btl/2/launch", "ray/2/launch", "raympijob/2/launch", "cold/2/launch",
                "kfmpi/2/launch", "ray_cold/2/-", "flytekit/1/launch", "mpirun/2/bandwidth", "raympijob/2/bandwidth",
                "mpirun/2/horovod", "raympijob/2/horovod", "raympijob_nodes/1/launch", "raympijob_nodes/2/launch",
                "warm_world/2/idle", *REPEATED, *FLAVOURS}
    assert set(samples) == expected
    # Every launch by Open MPI on this node was split into phases from its ranks' stamps; kfmpi runs one process.
    hydra = {key for key in FLAVOURS if "mpich" in key or "impi" in key}
    for key in expected - hydra - {"kfmpi/2/launch", "ray_cold/2/-", "flytekit/1/launch", "raympijob_nodes/1/launch",
                                   "raympijob_nodes/2/launch", "warm_world/2/idle"}:
        (sample,) = samples[key]
        assert sample["phases"], key
        assert sum(sample["phases"].values()) == pytest.approx(sample["wall"])
    assert samples["raympijob/2/launch"][0]["result"] == 2
    assert samples["kfmpi/2/launch"][0]["result"] == 1
    assert samples["raympijob/2/bandwidth"][0]["result"]["1"] > 0
    assert all(samples[key][0]["result"] == 2 for key in FLAVOURS if key.endswith("/launch"))
    assert all(samples[key][0]["result"]["1"] > 0 for key in FLAVOURS if key.endswith("/bandwidth"))
    assert samples["raympijob/2/horovod"][0]["result"] > 0
    # Repeated calls: every timed call returned the sum; 5 s apart means 5 s between calls; a warm world served the
    # warm RayMPIJob call 5 s apart; the idle warm world's memory is there for mpirun and both ranks.
    assert all(samples[key][0]["result"] == 2 for key in REPEATED)
    assert samples["mpirun+5s/2/launch"][0]["since_previous"] >= 5
    assert samples["raympijob+5s/2/launch"][0]["prestarted"]
    repeated = [line.split("|")[1:-1] for line in done.stdout.split("### Repeated calls", 1)[1].split("\n\n")[1]
                .splitlines() if line.startswith("|")]
    columns = [cell.strip() for cell in repeated[0]]
    assert columns[-len(PHASES):] == list(PHASES), "where a repeated call's time goes"
    (back_to_back,) = [row for row in repeated if "(c) RayMPIJob" in row[1] and "back to back" in row[2]]
    assert float(back_to_back[columns.index("rank 0 ready")]) > 0
    (idle,) = samples["warm_world/2/idle"]
    assert set(idle["result"]["memory_mb"]) == {"mpirun", "rank 0", "rank 1", "shim 0", "shim 1"}, "forked ranks"
    assert set(idle["result"]["template"]) == {"rss", "pss", "start_s", "idle_cpu_s_per_s"}
    assert all(0 < m["pss"] <= m["rss"] for m in idle["result"]["memory_mb"].values())
    # The multi-node runs report where rank 0 ran (first of the ranks' hosts) and what each node spent.
    (two_nodes,) = samples["raympijob_nodes/2/launch"]
    hosts, costs = two_nodes["result"], two_nodes["costs"]
    assert len(set(hosts)) == 2 and set(hosts) <= set(costs["cpu_s"]) == set(costs["peak_mb"])
    assert costs["cpu_s"][hosts[0]] > 0 and costs["peak_mb"][hosts[0]] > 0
    assert costs["new_ray_jobs"] >= 0
    for column in ("rank 0 node CPU-s", "rank 0 node peak MB", "other node CPU-s", "Ray jobs per task"):
        assert column in done.stdout
