"""The multi-node test cluster: real Ray nodes in namespaces of their own, and nothing left after it."""

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from scripts import netns_cluster as netns

# Starting a cluster takes ~30 s on a quiet machine, minutes on a loaded one (start() gives up at 240 s).
pytestmark = pytest.mark.timeout(600)

DRIVER_PREAMBLE = """
import os, socket, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init()
NODE_IDS = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}

def on(ip):
    return NodeAffinitySchedulingStrategy(NODE_IDS[ip], soft=False)
"""


def run_driver(cluster, body: str):
    """Run a Ray driver on the head; what it emits."""
    return cluster.driver(DRIVER_PREAMBLE + textwrap.dedent(body)).result(timeout=240)


def test_tasks_pinned_to_each_node_see_its_own_private_ip_and_no_way_out(netns_cluster):
    ips = [n.ip for n in netns_cluster.nodes]
    seen = run_driver(netns_cluster, f"""
        def source_address(to):  # the address this node's kernel sends from (a UDP connect sends nothing)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((to, 9))
                except OSError as e:
                    return os.strerror(e.errno)
                return s.getsockname()[0]

        @ray.remote(num_cpus=0)
        def where():
            return source_address({netns_cluster.head.ip!r}), socket.gethostname(), source_address("192.0.2.1")

        emit([ray.get(where.options(scheduling_strategy=on(ip)).remote()) for ip in {ips!r}])
    """)
    assert seen == [[n.ip, n.netns, "Network is unreachable"] for n in netns_cluster.nodes]
    assert len(set(ips)) == 3
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.213.0.0/16") for ip in ips)


def test_tmp_written_on_one_node_is_not_visible_on_the_others(netns_cluster):
    head, w1, w2 = netns_cluster.nodes
    seen = run_driver(netns_cluster, f"""
        PATH = "/tmp/written-on-w1"

        @ray.remote(num_cpus=0)
        def write():
            open(PATH, "w").write("x")

        @ray.remote(num_cpus=0)
        def exists():
            return os.path.exists(PATH)

        ray.get(write.options(scheduling_strategy=on({w1.ip!r})).remote())
        emit({{ip: ray.get(exists.options(scheduling_strategy=on(ip)).remote())
              for ip in {[head.ip, w1.ip, w2.ip]!r}}})
    """)
    assert seen == {head.ip: False, w1.ip: True, w2.ip: False}
    assert (w1.root / "tmp/written-on-w1").exists() and not Path("/tmp/written-on-w1").exists()


def test_job_submitted_from_the_host_runs_and_returns_its_logs(netns_cluster):
    from ray.job_submission import JobSubmissionClient

    head, worker = netns_cluster.head, netns_cluster.workers[0]
    code = (
        "import ray, socket; ray.init()\n"
        f"task = ray.remote(lambda: socket.gethostname()).options(resources={{'node:{worker.ip}': 0.01}})\n"
        "print('entrypoint on', socket.gethostname(), 'task on', ray.get(task.remote()))"
    )
    client = JobSubmissionClient(netns_cluster.dashboard_url, headers=netns_cluster.headers)
    job = client.submit_job(entrypoint=f"python -c {shlex.quote(code)}")
    deadline = time.monotonic() + 240
    while not (status := client.get_job_status(job)).is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == "SUCCEEDED", logs
    assert f"entrypoint on {head.netns} task on {worker.netns}" in logs


def test_a_working_directory_the_nodes_do_not_see_is_refused_saying_why(netns_cluster, tmp_path):
    assert str(tmp_path).startswith("/tmp/")
    with pytest.raises(netns.ClusterError) as refused:
        netns_cluster.driver("emit(1)", cwd=tmp_path)
    assert str(refused.value).startswith(f"{tmp_path} is not on the nodes of {netns_cluster.name}: their /tmp and "
                                         "/dev/shm are their own, showing of the machine's only ")


NOTHING_LEFT = {"namespaces": [], "links": [], "netns mounts": [], "processes": [], "state": False}


def leftovers(name: str, pids: dict) -> dict:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return {
        "namespaces": [ns for ns in netns.netns_names() if netns.cluster_of(ns) == name],
        "links": [link for link in netns.link_names() if netns.cluster_of(link) == name],
        "netns mounts": [m for m in mounts if f"/run/netns/{name}-" in m],
        "processes": sorted(pid for pid, ident in pids.items() if netns.process_identity(pid) == ident),
        "state": netns.state_dir(name).exists(),
    }


def cluster_pids(name: str) -> dict:
    """{pid: identity} of the processes in cluster `name`'s namespaces."""
    return {p: netns.process_identity(p) for ns in netns.netns_names() if netns.cluster_of(ns) == name
            for p in netns.netns_pids(ns)}


def test_lost_node_is_seen_dead_and_a_failing_test_leaves_nothing_behind():
    with pytest.raises(RuntimeError, match="the test failed"):
        with netns.start(workers=1, slots=1) as cluster:
            worker = cluster.workers[0]
            stray = subprocess.Popen(cluster.enter(worker) + ["sleep", "600"])
            pids = cluster_pids(cluster.name)
            assert {"raylet", "gcs_server", "sleep"} <= {netns.comm(p) for p in pids}
            cluster.kill_raylet(worker)
            cluster.wait_for_states({worker: "DEAD", cluster.head: "ALIVE"}, timeout=120)
            raise RuntimeError("the test failed")
    stray.wait(timeout=10)
    assert leftovers(cluster.name, pids) == NOTHING_LEFT


def test_cli_up_leaves_a_cluster_and_down_removes_it(netns_cluster):
    up = subprocess.run([sys.executable, netns.__file__, "up", "--workers", "1", "--slots", "1"],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    name = re.search(r"cluster (rmpi\d+) up", up.stdout).group(1)
    try:
        printed_ways_in_work_with_its_token_auth(name, up.stdout)
        pids = cluster_pids(name)
        assert {"raylet", "gcs_server"} <= {netns.comm(p) for p in pids}
        # its creator has exited; this module's cluster is owned by this live process
        assert name in netns.orphans() and netns_cluster.name not in netns.orphans()
        down = subprocess.run([sys.executable, netns.__file__, "down", name],
                              capture_output=True, text=True, timeout=60)
        assert f"removed {name}" in down.stdout, down.stderr
        assert leftovers(name, pids) == NOTHING_LEFT
    finally:
        netns.remove(name)


def printed_ways_in_work_with_its_token_auth(name: str, printed: str) -> None:
    """Run what `up` printed, as a user pastes it: the job submit command, and in a shell on the head and on a
    worker, `ray status` and a driver."""
    token = (netns.state_dir(name) / "token")
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text() not in printed, "the token's file, not it"
    submit = printed.split("e.g. from here:\n", 1)[1].splitlines()[0]
    done = subprocess.run(submit, shell=True, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "2 nodes" in done.stdout, done.stdout + done.stderr
    for node in (f"{name}-head", f"{name}-w1"):
        shell = re.search(rf"{node} .* a shell there: (.*)", printed).group(1)
        done = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=240,
                              input="ray status && python -c 'import ray; ray.init(); print(len(ray.nodes()), \"nodes\")'")
        assert done.returncode == 0 and "2 nodes" in done.stdout, done.stdout + done.stderr


@pytest.fixture
def checkout_in_tmp():
    """A checkout of HEAD under /tmp, with the script under test in it and this venv bind-mounted at its .venv
    (a venv path under /tmp, as in a clone there)."""
    root = Path(tempfile.mkdtemp(prefix="raympi-checkout-", dir="/tmp"))
    venv = root / ".venv"
    try:
        subprocess.run(f"git -C {netns.REPO} archive HEAD | tar -x -C {root}", shell=True, check=True)
        shutil.copy(netns.__file__, root / "scripts/netns_cluster.py")
        venv.mkdir()
        subprocess.run(["mount", "--bind", Path(sys.prefix).resolve(), venv], check=True)
        yield root
    finally:
        subprocess.run(["umount", "--lazy", venv], capture_output=True)
        assert not venv.is_mount(), f"{venv} is still mounted: not removing {root}"
        shutil.rmtree(root)


RANKS_WHERE = """
import socket

import raympi
from mpi4py import MPI


def gather():
    \"\"\"Each rank's raympi file and host, on rank 0.\"\"\"
    return MPI.COMM_WORLD.gather([raympi.__file__, socket.gethostname()], root=0)
"""

TWO_NODE_WORLD = """
import ray, raympi, ranks_where
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init()
group = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
ray.get(group.ready(), timeout=120)
mpi = {"args": ["-n", "2"], "worker_entry": "ranks_where.gather", **raympi.placement(group, 1)}

@ray.remote(num_cpus=1, runtime_env={"mpi": mpi},
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0))
def world():
    raympi.mpi_init()
    return ranks_where.gather()

emit(ray.get(world.remote(), timeout=240))
"""


def test_a_checkout_and_venv_under_tmp_run_a_two_node_world_of_their_own_code(checkout_in_tmp):
    """/tmp is private to each node; the checkout's code and venv under it are still what every node runs."""
    root = checkout_in_tmp
    (root / "ranks_where.py").write_text(RANKS_WHERE)
    start = (f"import json\nfrom scripts import netns_cluster\n"
             f"with netns_cluster.start(workers=2, slots=1) as cluster:\n"
             f"    print(json.dumps([cluster.driver({TWO_NODE_WORLD!r}).result(timeout=300),"
             f" [w.netns for w in cluster.workers]]))")
    env = {**os.environ, "PYTHONPATH": f"{root}/plugins:{root}/flytekitplugins-raympi:{root}"}
    run = subprocess.run([root / ".venv/bin/python", "-c", start], cwd=root, env=env,
                         capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr[-5000:]
    ranks, workers = json.loads(run.stdout.splitlines()[-1])
    assert [file for file, _ in ranks] == 2 * [f"{root}/plugins/raympi/__init__.py"]
    assert sorted(host for _, host in ranks) == sorted(workers), "a rank on each worker node"
