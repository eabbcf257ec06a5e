"""Section: RayMPIJob as deployed (root; podman). The image's build per MPI flavour (from a base already made,
no layer reused; Horovod's wheel from its cache, as `make test` leaves it) and its size; then the flagship (pi, 4 ranks
on 2 worker pods x 2 slots) on the container cluster of scripts/container_cluster.py beside the same pi as a plain
Flyte Ray task (benchmarks/ray_pi.py: flytekitplugins-ray, 4 Ray tasks, the same cluster shape), both in one image
(the Open MPI image plus flytekitplugins-ray), round-robin: what RayMPIJob adds on a real-shaped cluster."""

import shutil
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from benchmarks.harness import ROOT
from benchmarks.report import Section, seconds
from examples import pi
from scripts.container_cluster import ContainerCluster
from scripts.images import node_image, podman, with_packages

SAMPLES = 200_000


def build(flavour: str) -> tuple:
    """(seconds, MiB) of the flavour's image built anew under a throwaway tag, removed after."""
    tag = f"localhost/raympi-bench:{flavour}"
    node_image(flavour)  # the base, and an image of this flavour, exist first: only the build itself is timed
    started = time.monotonic()
    node_image(flavour, tag=tag, fresh=True)
    took = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 2**20
    podman("rmi", "--force", tag, check=False)
    return took, size


def run(_session, options) -> Section:
    from benchmarks import ray_pi  # flytekitplugins-ray: the bench extra's

    builds = {flavour: build(flavour) for flavour in ("openmpi", "mpich")}
    image = with_packages(node_image("openmpi"), f"flytekitplugins-ray=={version('flytekitplugins-ray')}")
    runs = {"RayMPIJob": [], "flytekitplugins-ray": []}
    with tempfile.TemporaryDirectory(prefix="raympi-code-") as code, ContainerCluster() as cluster:
        for package in ("examples", "benchmarks"):
            shutil.copytree(ROOT / package, Path(code, package), ignore=shutil.ignore_patterns("__pycache__", "results",
                                                                                                "published"))
        tasks = {"RayMPIJob": pi.estimate_pi, "flytekitplugins-ray": ray_pi.ray_pi}
        for turn in range(options.warmup + options.repeats):
            for name, task in tasks.items():
                started = time.monotonic()
                run = cluster.run_task(task, {"samples": SAMPLES}, image, Path(code))
                wall = time.monotonic() - started
                if run.finished.job_status != "SUCCEEDED":
                    raise RuntimeError(f"{name} failed: {run.error or run.finished.logs[-3000:]}")
                if turn >= options.warmup:
                    runs[name].append((wall, run.finished.ready_s, run.finished.submitted_s))

    def median(name: str, index: int) -> float:
        return statistics.median(r[index] for r in runs[name])

    rows = [[f"image build, {flavour}", seconds(took), "", "", f"{size:.0f} MiB"] for flavour, (took, size) in
            builds.items()]
    base = median("flytekitplugins-ray", 2)
    rows += [[f"pi, {name}", seconds(median(name, 0)), seconds(median(name, 1)), seconds(median(name, 2)),
              f"{median(name, 2) - base:+.2f} s" if name == "RayMPIJob" else "baseline"] for name in runs]
    notes = (f"Medians of {options.repeats} runs after {options.warmup} warm-up, each a new RayJob (cluster and "
             f"submitter pods); `wall`: registration (the code's tarball and the inputs to S3) to outputs read back; "
             f"`pods ready`: the first pod's start until every Ray pod passes its readiness probe; `submit to "
             f"result`: the submitter pod's run (`ray job submit`, the job, its logs followed to the end). "
             f"samples={SAMPLES} per rank or Ray task.")
    return Section("As deployed: the image, and pi on the container cluster", ["what", "wall s", "pods ready s",
                   "submit to result s", "vs plain Ray task / size"], rows, [], notes)
