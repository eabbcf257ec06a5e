"""Section 5: launch time of the one-int allreduce on 1, 2, 3 Ray nodes (one rank each), on the
namespace cluster of the tests (tests/netns_cluster.py: every node with a network, /tmp and PIDs of its
own; needs root). Ranks on other nodes start through Ray, without ssh. The driver runs on the head:

    python -m benchmarks.multinode drive REPEATS WARMUP NODES...   # on the head, as the section runs it
"""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import cache

from flytekit import task
from flytekitplugins.raympi import RayMPIJob, RunPolicy, Worker

from benchmarks import bodies
from benchmarks.harness import ROOT, Sample, Session
from benchmarks.report import Section, seconds

sys.path.insert(0, str(ROOT / "tests"))
import netns_cluster  # noqa: E402


@cache
def one_rank_per_node(nodes: int):
    config = RayMPIJob(worker=Worker(replicas=nodes), slots=1, run_policy=RunPolicy(active_deadline_seconds=600))
    return task(task_config=config)(bodies.launch)


def drive(repeats: int, warmup: int, nodes: list) -> dict:
    """Round-robin over `nodes`, as the harness does: {nodes: [(wall seconds, result) of each timed run]}."""
    runs = {n: [] for n in nodes}
    for turn in range(warmup + repeats):
        for n in nodes:
            start = time.time()
            total = one_rank_per_node(n)()
            if turn >= warmup:
                runs[n].append((time.time() - start, total))
    return runs


@contextmanager
def _without(name: str):
    """The cluster's nodes inherit this environment: the bodies' stamps folder is in this node's /tmp."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def run(session: Session, options) -> Section:
    nodes = options.nodes
    with _without(bodies.SETTINGS_ENV):
        cluster = netns_cluster.start(workers=max(nodes), slots=1)
    with cluster:
        driver = cluster.enter(cluster.head) + [
            sys.executable, "-m", "benchmarks.multinode", "drive", str(options.repeats), str(options.warmup),
            *map(str, nodes)]
        env = {**netns_cluster.node_env(), "RAY_ADDRESS": cluster.address}
        env.pop(bodies.SETTINGS_ENV, None)
        done = subprocess.run(driver, env=env, cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"the multi-node driver failed:\n{done.stderr[-5000:]}\n{cluster.logs()}")
    for n, runs in json.loads(done.stdout.splitlines()[-1]).items():
        session.samples[f"raympijob_nodes/{n}/launch"] = [Sample(wall, {}, total) for wall, total in runs]
    wall = {n: session.median(f"raympijob_nodes/{n}/launch") for n in nodes}
    rows = [[n, seconds(wall[n]), f"{wall[n] - wall[nodes[0]]:+.2f}"] for n in nodes]

    def plot(ax):
        ax.plot(nodes, [wall[n] for n in nodes], marker="o", label="(c) RayMPIJob, one rank per node")
        ax.set_xticks(nodes)
        ax.set_xlabel("Ray nodes (network namespaces on this machine)")
        ax.set_ylabel("seconds (median)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)

    notes = (f"Medians of {options.repeats} runs on a cluster of a head (no CPUs, the driver) and {max(nodes)} "
             "workers of 1 CPU, all sharing this machine's cores. Rank 0's node starts mpirun; each other node's "
             "MPI daemon starts as a Ray task there (a Ray worker, then prted).")
    return Section("Multi-node: launch time by Ray nodes, one rank each", ["nodes", "wall s", f"minus {nodes[0]} node(s)"],
                   rows, notes=notes, plot=plot)


if __name__ == "__main__" and sys.argv[1] == "drive":
    print(json.dumps(drive(int(sys.argv[2]), int(sys.argv[3]), [int(n) for n in sys.argv[4:]])))
