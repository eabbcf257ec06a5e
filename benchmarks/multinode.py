"""Section 5: launch time of the one-int allreduce on 1, 2, 3 Ray nodes (one rank each), on the
namespace cluster of the tests (scripts/netns_cluster.py: every node with a network, /tmp and PIDs of
its own; needs root). Ranks on other nodes start through Ray, without ssh. The driver runs on the head.
"""

import time
from functools import cache

from flytekit import task
from flytekitplugins.raympi import RayMPIJob, RunPolicy, Worker

from benchmarks import bodies
from benchmarks.harness import ROOT, Sample, Session
from benchmarks.report import Section, seconds
from scripts import netns_cluster


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


def run(session: Session, options) -> Section:
    nodes = options.nodes
    # Without the session's settings: the bodies' stamps folder is in this node's /tmp.
    with netns_cluster.start(workers=max(nodes), slots=1, env={bodies.SETTINGS_ENV: None}) as cluster:
        runs_by_nodes = cluster.driver(f"""
            from benchmarks.multinode import drive
            emit(drive({options.repeats}, {options.warmup}, {nodes!r}))
        """, cwd=ROOT).result(timeout=1800)
    for n, runs in runs_by_nodes.items():
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
