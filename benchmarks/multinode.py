"""Section 5: the launch of a minimal MPI task on 1, 2, 4, 8 Ray nodes (one rank each) of the namespace cluster
of the tests (scripts/netns_cluster.py: every node with a network, /tmp and PIDs of its own; needs root), and
what each added node costs: wall time, CPU-s and peak memory on rank 0's node and on the others
(benchmarks.nodecost), and the Ray jobs each task creates. Ranks on other nodes start through Ray, without ssh.
The task runs in a driver on the head, which calls it whenever this process asks over a socket, so that
the nodes are measured from here around each call.
"""

import json
import socket
import statistics
import time
from functools import cache

from flytekit import task
from flytekitplugins.raympi import RayMPIJob, RunPolicy, Worker

from benchmarks import bodies, nodecost
from benchmarks.harness import ROOT, Sample, Session
from benchmarks.report import Section, Target
from scripts import netns_cluster

# Targets of issue 14: per node added, on rank 0's node; per MPI task; largest launch minus the baseline's.
CPU_PER_NODE_S = 0.15
PEAK_PER_NODE_MB = 10.0
JOBS_PER_TASK = 1
ADDED_WALL_S = 3.0
IDLE_S = 10.0  # each node's idle CPU rate is measured over this long before the runs, and taken off their CPU-s
EXIT_TIMEOUT_S = 30.0  # after a call returns, the processes it started on the nodes get this long to exit
SETTLE_S = 1.0  # then Ray's bookkeeping of their exits is counted for this long
CALL_TIMEOUT_S = 900


@cache
def one_rank_per_node(nodes: int):
    config = RayMPIJob(worker=Worker(replicas=nodes), slots=1, run_policy=RunPolicy(active_deadline_seconds=600))
    return task(task_config=config)(bodies.hosts)


def serve(address) -> None:
    """On the head: for each node count `address` sends (a line), call the task and answer [wall s, each rank's
    host] (a JSON line), until the connection closes."""
    with socket.create_connection(tuple(address)) as connection, connection.makefile("rw") as stream:
        for line in stream:
            start = time.time()
            hosts = one_rank_per_node(int(line))()
            stream.write(json.dumps([time.time() - start, hosts]) + "\n")
            stream.flush()


def call(stream, nodes: int) -> list:
    """[wall s, hosts] of one call of the task on `nodes` nodes, made by the driver."""
    stream.write(f"{nodes}\n")
    stream.flush()
    if not (answer := stream.readline()):
        raise netns_cluster.ClusterError("the driver closed the connection")
    return json.loads(answer)


def measure(cluster, groups: dict, stream, nodes: list, repeats: int, warmup: int) -> tuple[dict, dict]:
    """Round-robin over `nodes`, as the harness does: ({nodes: [Sample of each timed run]}, {node: idle CPU-s/s})."""
    idle = nodecost.idle_rates(groups, IDLE_S)
    samples = {n: [] for n in nodes}
    for turn in range(warmup + repeats):
        for n in nodes:
            window = nodecost.Window(groups, cluster)
            wall, hosts = call(stream, n)
            left_running = window.wait_for_exits(EXIT_TIMEOUT_S)
            time.sleep(SETTLE_S)
            if turn >= warmup:
                samples[n].append(Sample(wall, {}, hosts, left_running=left_running, costs=window.close(idle)))
    return samples, idle


def on_rank0(what: str):
    return lambda s: s.costs[what][s.result[0]]


def on_others(what: str):
    """Per node other than rank 0's (their mean)."""
    return lambda s: statistics.mean(s.costs[what][h] for h in s.result[1:]) if s.result[1:] else None


FIGURES = {"wall": lambda s: s.wall, "cpu": on_rank0("cpu_s"), "peak": on_rank0("peak_mb"),
           "other cpu": on_others("cpu_s"), "other peak": on_others("peak_mb"),
           "jobs": lambda s: 1 + s.costs["new_ray_jobs"]}  # the task's own job is its driver's


def run(session: Session, options) -> Section:
    nodes, top = options.nodes, max(options.nodes)
    available = nodecost.memory_available_mb()
    # Without the session's settings: the bodies' stamps folder is in this node's /tmp.
    with (netns_cluster.start(workers=top, slots=1, env={bodies.SETTINGS_ENV: None}) as cluster,
          nodecost.node_cgroups(cluster.workers) as groups,
          socket.create_server((cluster.head.ip.rpartition(".")[0] + ".1", 0)) as server):  # the bridge's .1: here
        cluster_mb = available - nodecost.memory_available_mb()
        driver = cluster.driver(f"""
            from benchmarks.multinode import serve
            serve({server.getsockname()!r})
            emit(None)
        """, cwd=ROOT)
        try:
            server.settimeout(CALL_TIMEOUT_S)
            connection = server.accept()[0]
            with connection, connection.makefile("rw") as stream:
                samples, idle = measure(cluster, groups, stream, nodes, options.repeats, options.warmup)
        finally:
            driver.result(timeout=60)
    for n, runs in samples.items():
        session.samples[f"raympijob_nodes/{n}/launch"] = runs
    median = {name: {n: session.median(f"raympijob_nodes/{n}/launch", f) for n in nodes} for name, f in FIGURES.items()}

    def plot(ax):
        ax.plot(nodes, [median["wall"][n] for n in nodes], marker="o", label="(c) RayMPIJob, one rank per node: wall s")
        ax.plot(nodes, [median["cpu"][n] for n in nodes], marker="s", label="CPU-s on rank 0's node")
        ax.set_xticks(nodes)
        ax.set_xlabel("Ray nodes (network namespaces on this machine)")
        ax.set_ylabel("seconds, CPU-seconds (median)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)

    headers = ["nodes", "wall s", f"minus {nodes[0]} node(s)", "rank 0 node CPU-s", "per node added",
               "rank 0 node peak MB", "per node added", "other node CPU-s", "other node peak MB", "Ray jobs per task"]
    return Section("Multi-node: launch by Ray nodes, one rank each", headers, rows(median, nodes),
                   targets(median, nodes), notes(options, cluster_mb, idle), plot)


def per_node_added(median: dict, nodes: list, n: int) -> float | None:
    """(median at n - median at the baseline) / (n - the baseline's nodes); None for the baseline."""
    base = nodes[0]
    return None if n == base else (median[n] - median[base]) / (n - base)


def signed(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def rows(median: dict, nodes: list) -> list:
    def figure(name, n, digits=2):
        return "-" if median[name][n] is None else f"{median[name][n]:.{digits}f}"

    return [[n, figure("wall", n), signed(median["wall"][n] - median["wall"][nodes[0]]), figure("cpu", n),
             signed(per_node_added(median["cpu"], nodes, n), 3), figure("peak", n, 1),
             signed(per_node_added(median["peak"], nodes, n), 1), figure("other cpu", n), figure("other peak", n, 1),
             f"{median['jobs'][n]:g}"] for n in nodes]


def targets(median: dict, nodes: list) -> list:
    base, top = nodes[0], max(nodes)
    jobs = Target(f"Ray jobs per MPI task = {JOBS_PER_TASK} ({', '.join(map(str, nodes))} nodes)",
                  " / ".join(f"{median['jobs'][n]:g}" for n in nodes),
                  all(median["jobs"][n] == JOBS_PER_TASK for n in nodes))
    if top == base:
        return [jobs]
    cpu, peak = (per_node_added(median[name], nodes, top) for name in ("cpu", "peak"))
    added_wall = median["wall"][top] - median["wall"][base]
    return [Target(f"rank 0's node, per node added ({top} vs {base}): CPU <= {CPU_PER_NODE_S} s", f"{cpu:.3f} CPU-s",
                   cpu <= CPU_PER_NODE_S),
            Target(f"rank 0's node, per node added ({top} vs {base}): peak memory <= {PEAK_PER_NODE_MB:g} MB",
                   f"{peak:.1f} MB", peak <= PEAK_PER_NODE_MB),
            jobs,
            Target(f"{top}-node launch <= {base}-node launch + {ADDED_WALL_S:g} s", f"{added_wall:+.2f} s",
                   added_wall <= ADDED_WALL_S)]


def notes(options, cluster_mb: float, idle: dict) -> str:
    base, top = options.nodes[0], max(options.nodes)
    return (
        f"Medians of {options.repeats} runs on a cluster of a head (no CPUs, the driver) and {top} workers of 1 CPU, "
        f"all sharing this machine's cores (the idle cluster took {cluster_mb / 1000:.1f} GB of MemAvailable). "
        "Rank 0's node starts mpirun; the other nodes' MPI daemons start through Ray (README: Across Ray nodes). The "
        "body gathers each rank's host name: rank 0's node is the first. CPU-s and peak MB: a cpuacct and a memory "
        "cgroup (v1) per worker node, holding all its processes, from just before the call until "
        f"{SETTLE_S:g} s after the processes it started there exited; CPU-s less the node's idle rate (median "
        f"{statistics.median(idle.values()):.3f} CPU-s/s, over {IDLE_S:g} s before the runs); peak MB = "
        "memory.max_usage_in_bytes less the usage at the start: anonymous memory, page cache the node brought in, "
        "files written to its tmpfs /tmp and /dev/shm, kernel memory. Other node: per node other than rank 0's. Per "
        f"node added: (figure at N - figure at {base}) / (N - {base}). Ray jobs per task: 1 (the driver's job, the "
        "task's own) + the jobs Ray's state API lists new after the call. Targets: per node added, <= "
        f"{CPU_PER_NODE_S} CPU-s and <= {PEAK_PER_NODE_MB:g} MB on rank 0's node; {JOBS_PER_TASK} Ray job per task; "
        f"{top}-node launch <= {base}-node + {ADDED_WALL_S:g} s.")
