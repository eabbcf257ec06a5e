"""RayMPIJob across Ray nodes, without ssh: a head and two workers, each in namespaces of its own
(network, mount with a private /tmp, PID), so a rank on another node really is elsewhere."""

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from flytekit.models.literals import LiteralMap

from conftest import TESTS_DIR, command_line
from decks import world_table
from ray_job import run_task, wait_until_accepting
from scripts.netns_cluster import comm, netns_pids
from scripts.netns_cluster import start as start_netns_cluster

JOB_CODE = TESTS_DIR / "job_code"
sys.path.insert(0, str(JOB_CODE))
import mpi_jobs  # noqa: E402

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(netns_cluster):
    wait_until_accepting(netns_cluster.dashboard_url, headers=netns_cluster.headers)
    return netns_cluster


@pytest.fixture
def shared_dir():
    """A directory every node sees (their /tmp is private): as an object store would be."""
    path = Path(tempfile.mkdtemp(prefix="raympi-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mpi_processes(node) -> list:
    """The MPI launchers, daemons and ranks running on `node` (a process's comm is 15 characters at most)."""
    return [pid for pid in netns_pids(node.netns)
            if comm(pid) in ("prterun", "prted", "mpiexec", "mpiexec.hydra", "hydra_pmi_proxy", "hydra_bstrap_pr")
            or "raympi.runner" in command_line(pid)]


def check_world(rows, cluster) -> str:
    """Rows of mpi_jobs.report_world for x=3 on 2 nodes x 2 slots; rank 0's node IP."""
    ips = [row.split()[1] for row in rows]
    assert [row.split()[0] for row in rows] == ["0/4", "1/4", "2/4", "3/4"]
    assert sorted(ips) == sorted(2 * [w.ip for w in cluster.workers]), "2 ranks on each worker node"
    assert {row.split()[3] for row in rows} == {"30"}, "allreduce of 3 * (rank + 1) across nodes"
    assert {tuple(row.split()[4:8]) for row in rows} == {("0", "1", "two_nodes", "forked")}, \
        "every rank at mpirun's niceness, 1 thread, with the task's runtime_env, forked from its node's template"
    return ips[0]


def ray_state(cluster, resource: str) -> list:
    """Ray's state API's list of JOBS, ACTORS, ... of the cluster."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(cluster.dashboard_url, headers={"Content-Type": "application/json", **cluster.headers})
    return client.list(StateResource[resource], ListApiOptions(timeout=30, limit=10000, detail=True),
                       raise_on_missing_output=False)


def rank_dirs(node) -> list:
    """The ranks' working directories left in `node`'s private /tmp."""
    return sorted(p.name for p in (node.root / "tmp").glob("raympi-rank-*"))


def test_ranks_run_on_the_reserved_worker_nodes_and_rank0s_file_reaches_the_driver(cluster):
    """The world starts without ssh and without a Ray driver or job of its own: the ranks on the other node are
    started by a daemon launcher there, which ends with the task's reservation."""
    jobs = ray_state(cluster, "JOBS")
    rows, content = cluster.driver("""
        import mpi_jobs
        rows, report = mpi_jobs.two_nodes(x=3, fail_on_rank=-1)
        emit([rows, open(report).read()])
    """, cwd=JOB_CODE).result(timeout=600)
    check_world(rows, cluster)
    assert content == "\n".join(rows) + "\n", "the file rank 0 wrote on its node, read on the head"
    assert [rank_dirs(w) for w in cluster.workers] == [[], []], "no working directory is left on the ranks' nodes"
    new_jobs = [job for job in ray_state(cluster, "JOBS") if job not in jobs]
    assert len(new_jobs) == 1, f"Ray jobs besides the driver's own: {new_jobs}"
    launchers = [a for a in ray_state(cluster, "ACTORS") if a.class_name == "DaemonLauncher"]
    assert launchers and {a.state for a in launchers} == {"DEAD"}, launchers


def test_every_world_on_two_nodes_forks_its_ranks_from_one_template_per_node(cluster):
    """Each node's first world starts the node's template and waits for it (check_world: every rank forked); later
    worlds fork from the same templates, also once rank 0, so mpirun, is on the other node: Open MPI's daemon gives
    its ranks other library paths than mpirun gives its own (raympi.shim.SEARCH_PATHS; the key: test_template)."""
    worlds = cluster.driver("""
        import mpi_jobs
        worlds = []
        while len(worlds) < 12 and len({rows[0].split()[1] for rows in worlds}) < 2:  # rank 0's node: Ray's choice
            worlds.append(mpi_jobs.two_nodes(x=3, fail_on_rank=-1)[0])
        emit(worlds)
    """, cwd=JOB_CODE).result(timeout=600)
    assert len({check_world(rows, cluster) for rows in worlds}) == 2, "rank 0 was on either node"
    templates = {(row.split()[1], row.split()[8]) for rows in worlds for row in rows}
    assert len(templates) == 2, f"one template per node: (node, template pid) {sorted(templates)}"


def holders(secrets) -> list:
    """The processes of this machine (every node's) whose command line or environment holds one of `secrets`."""
    found = []
    for pid in psutil.pids():
        for part in ("cmdline", "environ"):
            try:
                content = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:
                continue
            if any(secret in content for secret in secrets):
                found.append(f"{pid} {part}: {content[:300]!r}")
    return found


def test_the_launch_key_is_in_no_command_line_environment_ray_log_or_ray_state(cluster, shared_dir):
    """The key lets its holder start any daemon on the world's other nodes (raympi.daemon_launcher): it lives in
    the memory of the driver, the launchers and the launch agents only. Recorded where raympi.placement makes it."""
    started, release, recorded = shared_dir / "started", shared_dir / "release", shared_dir / "key"
    driver = cluster.driver(f"""
        import mpi_jobs
        from raympi import spread

        def recording_key():
            key = new_key()
            open({str(recorded)!r}, "w").write(key.hex())
            return key

        new_key, spread.new_key = spread.new_key, recording_key
        emit(mpi_jobs.two_nodes_held(started={str(started)!r}, release={str(release)!r}))
    """, cwd=JOB_CODE)
    try:
        deadline = time.monotonic() + 600
        while not started.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), driver.communicate()[1][-5000:]
        key = bytes.fromhex(recorded.read_text())
        secrets = (key, key.hex().encode(), key.hex().upper().encode())
        assert not holders(secrets), "while the world runs"
    finally:
        release.touch()
    assert driver.result(timeout=300) == 1
    assert not holders(secrets)
    logged = [str(path) for node in cluster.nodes for path in (node.root / "tmp" / "ray").rglob("*")
              if path.is_file() and not path.is_symlink() and any(s in path.read_bytes() for s in secrets)]
    assert not logged, "Ray's logs and files on the nodes"
    state = [ray_state(cluster, resource) for resource in
             ("JOBS", "ACTORS", "TASKS", "PLACEMENT_GROUPS", "WORKERS", "NODES", "OBJECTS", "RUNTIME_ENVS")]
    assert key.hex() not in repr(state), "Ray's state API"


@pytest.mark.parametrize("flavour", ["mpich", "impi"])
def test_hydra_flavours_run_across_two_nodes_without_ssh_and_a_rank_failing_on_the_other_node_is_named(
        cluster, flavour):
    """Hydra (MPICH's, Intel MPI's) starts its proxy on the other node through the same launch agent and daemon
    launchers as Open MPI's daemons (raympi.flavours)."""
    rows, content, error = cluster.driver(f"""
        import mpi_jobs
        rows, report = mpi_jobs.two_nodes_{flavour}(x=3, fail_on_rank=-1)
        try:
            mpi_jobs.two_nodes_{flavour}(x=3, fail_on_rank=3)
            error = None
        except Exception as e:
            error = str(e)
        emit([rows, open(report).read(), error])
    """, cwd=JOB_CODE).result(timeout=600)
    rank0_ip = check_world(rows, cluster)
    assert content == "\n".join(rows) + "\n"
    other_ip = next(w.ip for w in cluster.workers if w.ip != rank0_ip)
    assert re.search(r"MPI rank 3 \(pid \d+ on [^)]+\) raised RuntimeError: rank 3 failed on purpose", error), error
    assert {row.split()[1] for row in rows[2:]} == {other_ip}, "ranks 2 and 3 on the other node"
    assert no_mpi_processes_within(30, cluster.workers)


def no_mpi_processes_within(seconds: float, nodes) -> bool:
    deadline = time.monotonic() + seconds
    while any(mpi_processes(n) for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [mpi_processes(n) for n in nodes] == [[] for _ in nodes]


def test_entrypoint_path_file_written_on_rank0s_node_reaches_a_downstream_task(cluster, shared_dir):
    upstream = run_task(cluster.dashboard_url, mpi_jobs.two_nodes, {"x": 3, "fail_on_rank": -1},
                        shared_dir / "upstream", JOB_CODE, timeout=600, headers=cluster.headers)
    rank0_ip = check_world(upstream.outputs["o0"], cluster)
    report = upstream.literals.literals["o1"]
    assert report.scalar.blob.uri.startswith(str(shared_dir / "upstream" / "raw"))
    downstream = run_task(cluster.dashboard_url, mpi_jobs.read_report, LiteralMap({"report": report}),
                          shared_dir / "downstream", JOB_CODE, headers=cluster.headers)
    reader_ip, *lines = downstream.outputs["o0"].splitlines()
    assert reader_ip == cluster.head.ip != rank0_ip, "read on another node than rank 0 wrote it"
    assert lines == upstream.outputs["o0"]


def test_a_two_node_worlds_deck_shows_both_nodes_with_their_ranks(cluster, shared_dir):
    """Rank 0 runs on a worker node; flytekit's entrypoint (the Ray job's driver) writes the deck to the task's output
    metadata prefix, as for any task."""
    finished = run_task(cluster.dashboard_url, mpi_jobs.two_nodes_decked, {}, shared_dir / "decked", JOB_CODE,
                        timeout=600, headers=cluster.headers)
    said = {int(rank): ip for rank, ip in (row.split() for row in finished.outputs["o0"])}
    table = world_table((shared_dir / "decked" / "outputs" / "deck.html").read_text())
    assert {int(row["rank"]): row["node IP"] for row in table} == said, "each rank on the node it says it ran on"
    assert sorted(said.values()) == sorted(2 * [w.ip for w in cluster.workers]), "two nodes, two ranks each"


def test_more_nodes_than_the_cluster_has_fail_within_the_placement_timeout(cluster):
    driver = cluster.driver("""
        import mpi_jobs
        mpi_jobs.three_nodes()
    """, cwd=JOB_CODE)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode != 0
    assert ("could not reserve 3 worker(s) x 2 slots within placement_timeout_seconds=20; each of the 3 workers "
            "needs a Ray node of its own with 2 CPUs, and the cluster has 2") in " ".join(err.split())


def test_two_jobs_at_once_both_finish(cluster, shared_dir):
    results = {}

    def submit(name):
        results[name] = run_task(cluster.dashboard_url, mpi_jobs.two_nodes, {"x": 3, "fail_on_rank": -1},
                                 shared_dir / name, JOB_CODE, timeout=800, headers=cluster.headers)

    threads = [threading.Thread(target=submit, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {"first", "second"}
    for finished in results.values():
        check_world(finished.outputs["o0"], cluster)


def test_horovod_training_across_nodes_converges_with_identical_parameters(cluster):
    accuracy, ranks = cluster.driver(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR.parent)!r})
        import mpi_jobs
        emit(mpi_jobs.horovod_two_nodes(epochs=20))
    """, cwd=JOB_CODE).result(timeout=800)
    assert accuracy >= 0.9
    assert sorted(rank.split()[0] for rank in ranks) == sorted(w.ip for w in cluster.workers), "a rank on each"
    assert len({rank.split()[1] for rank in ranks}) == 1, "every rank ends with the same parameters"


def test_one_cpu_nodes_and_each_nodes_ranks_see_the_gpus_ray_reserved_there():
    """Rank 0 holds its node's only CPU; the daemon launchers hold none. With GPUs declared to Ray, the ranks on
    each node see the GPUs Ray reserved on that node (and pick by local rank), not those of rank 0's node: on w1,
    whose GPU 0 another actor holds, GPUs 1 and 2; on w2, 0 and 1."""
    with start_netns_cluster(workers=2, slots=1, gpus=3) as small:
        rows = small.driver("""
            import mpi_jobs
            rows, _ = mpi_jobs.two_one_cpu_nodes(x=1, fail_on_rank=-1)
            emit(rows)
        """, cwd=JOB_CODE).result(timeout=300)
        assert sorted(row.split()[1] for row in rows) == sorted(w.ip for w in small.workers), rows
        w1, w2 = small.workers
        held, ranks = small.driver(f"""
            import ray, mpi_jobs
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            ray.init(runtime_env={{"working_dir": "."}})  # the code, for the ranks on other nodes
            w1 = next(n["NodeID"] for n in ray.nodes() if n["NodeManagerAddress"] == {w1.ip!r} and n["Alive"])
            holder = mpi_jobs.GPUHolder.options(
                num_gpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(w1, soft=False)).remote()
            emit([ray.get(holder.gpus.remote()), mpi_jobs.two_gpu_nodes()])
        """, cwd=JOB_CODE).result(timeout=300)
        assert held == "0"
        seen = {}
        for rank in ranks:
            ip, visible = rank.split()
            seen.setdefault(ip, set()).add(visible)
        assert seen == {w1.ip: {"1,2"}, w2.ip: {"0,1"}}, ranks


def test_a_daemon_that_cannot_start_on_another_node_fails_the_task_in_seconds_saying_why():
    """mpirun's daemon is not where mpirun looks for it on the other node (an MPI installed elsewhere there): the world
    never starts, so Ray would start rank 0's worker again and again until its registration timeout (300 s). The
    launcher there keeps the daemon's stderr, and the driver (raympi.get) fails the task with it.

    A cluster of its own: on rank 0's node Ray counts each dead mpirun as a worker starting (maximum_startup_concurrency
    is the node's CPUs) until that timeout, so no other worker starts there for 300 s (README: Known limits)."""
    with start_netns_cluster(workers=2, slots=1) as small:
        began = time.monotonic()
        driver = small.driver("""
            import mpi_jobs
            mpi_jobs.no_daemons_elsewhere()
        """, cwd=JOB_CODE)
        _, err = driver.communicate(timeout=300)
        failed_after = time.monotonic() - began
        print(f"failed {failed_after:.1f} s after the driver started")
        reported = " ".join(err.split())
        assert driver.returncode != 0
        assert re.search(r"MPIWorldStartError: the MPI world could not start: mpirun's daemon on 10\.[\d.]+ failed "
                         r"\(exit status 127\): /bin/sh: 1: /nonexistent/bin/prted: not found", reported), err[-3000:]
        assert failed_after < 60, "not Ray's registration timeout"
        assert [mpi_processes(n) for n in small.nodes] == [[] for _ in small.nodes]


# Last: the cluster has one worker node fewer afterwards.
def test_losing_a_node_fails_the_task_and_leaves_nothing_running(cluster, shared_dir):
    started = shared_dir / "started"
    driver = cluster.driver(f"""
        import mpi_jobs
        mpi_jobs.two_nodes_waiting(started={str(started)!r})
    """, cwd=JOB_CODE)
    deadline = time.monotonic() + 600
    while not started.exists() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert started.exists(), driver.communicate()[1][-5000:] + cluster.logs()
    rank0_ip = started.read_text()
    lost = next(w for w in cluster.workers if w.ip != rank0_ip)
    cluster.kill_raylet(lost)
    killed = time.monotonic()
    _, err = driver.communicate(timeout=120)
    assert driver.returncode != 0
    print(f"failed {time.monotonic() - killed:.1f} s after the raylet was killed:\n{err[-3000:]}")
    # Ranks 0 and 1 run on rank 0's node; 2 and 3, on the lost node, vanish with it.
    reported = " ".join(err.split())  # flytekit's rich traceback wraps lines
    lost_rank = rf"MPIRankError: MPI rank [23] \(pid \d+ on {lost.netns}\) exited before it finished"
    assert re.search(lost_rank, reported), err
    survivors = [n for n in cluster.nodes if n is not lost]
    assert no_mpi_processes_within(30, survivors)
    assert [rank_dirs(n) for n in survivors] == [[] for _ in survivors], "the failed world's working directories"


def test_without_root_a_cluster_fails_at_once_saying_so():
    """Namespace clusters need root: a run without it fails these tests at once, saying so."""
    code = f"""
import os, sys, time
sys.path.insert(0, {str(TESTS_DIR.parent)!r})
from scripts import netns_cluster
os.setgid(65534)
os.setuid(65534)  # nobody, with Python and the script loaded
began = time.monotonic()
try:
    netns_cluster.start()
except netns_cluster.ClusterError as error:
    print(f"{{time.monotonic() - began:.1f}} {{error}}")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    seconds, message = done.stdout.split(" ", 1)
    assert message.strip() == ("a network-namespace cluster needs root (ip netns, unshare, mount): run the tests as "
                               "root (sudo make test), or leave out tests/test_multinode.py and "
                               "tests/test_netns_cluster.py"), done.stderr
    assert float(seconds) < 1
