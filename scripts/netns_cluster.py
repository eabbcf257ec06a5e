"""A real multi-node Ray cluster on one machine (needs root).

Each node (a head and N workers) lives in namespaces of its own: network (its own IP on a
private bridge, no route out), mount (its own tmpfs on /tmp and /dev/shm, an /etc/hosts naming
all nodes), UTS (hostname = node name) and PID (killing the node's init kills everything in it).
The rest of the file system is the machine's. What the cluster runs from is seen by every node wherever
it is: the repository, the venv (and its interpreter), the current directory and sys.path of the process
that starts the cluster, where under /tmp or /dev/shm, are bound into each node's tmpfs there.
Cluster `rmpi<k>` uses 10.213.<k>.0/24: the bridge (host side) is .1, the head .2, worker i .(2+i).
Its nodes are `rmpi<k>-head`, `rmpi<k>-w<i>`.

    python scripts/netns_cluster.py up [--workers 2] [--slots 2]   # leaves a cluster running
    python scripts/netns_cluster.py down [NAME ...]                 # default: clusters whose creator is gone

In Python: `with start(workers, slots) as cluster:`, then `cluster.driver(code)` runs a Ray driver on the head.
"""

import argparse
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = "rmpi"
NAME_RE = re.compile(rf"^({PREFIX}\d+)(-|$)")
SUBNET = "10.213.{}"
STATE_ROOT = Path("/run/raympi-netns")
HEAD_PORT = 6379
DASHBOARD_PORT = 8265
# The raylet aborts when an agent has not reported the port it chose within ~15 s (fixed in Ray
# 2.60), one wait after the other. A port given here (no clash: each node has its own network) is
# not waited for. Only the runtime env agent's: the dashboard agent's listen port is waited for
# anyway, and its earlier ports' waits are what give that agent, slow to import on a loaded
# machine, more time before it.
FIXED_PORTS = ["--runtime-env-agent-port", "52367"]
PRIVATE = {"/tmp": "2g", "/dev/shm": "1g"}  # a tmpfs of each node's own, of that size
VENV_BIN = Path(sys.prefix) / "bin"
RESULT_ENV = "NETNS_CLUSTER_RESULT"
# Prepended to a driver's code: a driver's stdout also carries its Ray workers' output, in any order.
EMIT = f"""
def emit(value):
    \"\"\"Hand `value` (JSON) back to Driver.result().\"\"\"
    import json, os
    with open(os.environ[{RESULT_ENV!r}], "w") as f:
        json.dump(value, f)
"""


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Node:
    name: str  # "head", "w1", "w2", ...
    netns: str  # "<cluster>-<name>": also its hostname and the host side of its veth
    ip: str
    init_pid: int  # host pid of the node's PID-namespace init

    @property
    def root(self) -> Path:
        """The node's file system as seen from the host (its private /tmp included)."""
        return Path(f"/proc/{self.init_pid}/root")


class Cluster:
    """A running cluster; `stop()` (or leaving the `with` block) removes all of it."""

    def __init__(self, name: str, nodes: list, env: dict, shared: list):
        self.name = name
        self.nodes = nodes
        self.head, *self.workers = nodes
        self.env = env  # the environment Ray runs in on every node
        self.shared = shared  # the machine's paths under /tmp or /dev/shm that every node sees too
        self._drivers = 0

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{HEAD_PORT}"

    @property
    def dashboard_url(self) -> str:
        """Dashboard and job submission server, reachable from the host over the bridge."""
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    @property
    def client_env(self) -> dict:
        """What a Ray client of this cluster (`ray status`, `ray job submit`, a driver) needs in its environment: the
        mode of its token authentication and the file of the token, which only root reads."""
        if self.env.get("RAY_AUTH_MODE") != "token":
            return {}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state_dir(self.name) / "token")}

    @property
    def headers(self) -> dict:
        """HTTP headers that authenticate a client of the dashboard (JobSubmissionClient(headers=...))."""
        token = self.env.get("RAY_AUTH_TOKEN") if self.env.get("RAY_AUTH_MODE") == "token" else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def enter(self, node: Node, cwd=None) -> list:
        """The argv prefix that runs a command inside `node`'s namespaces, in `cwd` or else the current
        directory (ClusterError if the nodes do not see it); the command dies with the nsenter process."""
        cwd = str(cwd or os.getcwd())
        for path in {os.path.abspath(cwd), os.path.realpath(cwd)}:
            if private(path) and not any(path == s or path.startswith(s + "/") for s in self.shared):
                raise ClusterError(
                    f"{cwd} is not on the nodes of {self.name}: their {' and '.join(PRIVATE)} are their own, showing "
                    f"of the machine's only {', '.join(self.shared) or 'nothing'} (the repository, the venv, the "
                    f"current directory and sys.path of the process that started the cluster)")
        return ["nsenter", "-t", str(node.init_pid), "-n", "-m", "-u", "-p", f"--wd={cwd}",
                "setpriv", "--pdeathsig", "KILL", "--"]

    def driver(self, code: str, cwd=None) -> "Driver":
        """Start Python `code` (dedented) on the head as a Ray driver of this cluster, in the nodes'
        environment, in `cwd` (first on its sys.path); `emit(value)` in the code hands back a result."""
        self._drivers += 1
        result = state_dir(self.name) / f"driver-{self._drivers}.json"  # /run is shared by the nodes
        env = {**self.env, "RAY_ADDRESS": self.address, RESULT_ENV: str(result)}
        argv = self.enter(self.head, cwd) + [sys.executable, "-c", EMIT + textwrap.dedent(code)]
        return Driver(self, argv, result, env)

    def node_states(self) -> dict:
        """{node IP: "ALIVE" | "DEAD"} as Ray's GCS sees it (a live entry wins over a dead one)."""
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        client = StateApiClient(self.dashboard_url, headers={"Content-Type": "application/json", **self.headers})
        states = {}
        for n in client.list(StateResource.NODES, ListApiOptions(timeout=10), raise_on_missing_output=False):
            if states.get(n.node_ip) != "ALIVE":
                states[n.node_ip] = n.state
        return states

    def wait_for_states(self, expected: dict, timeout: float = 120) -> None:
        """Wait until Ray sees each node of `expected` ({Node: "ALIVE" | "DEAD"}) in that state."""
        wanted = {node.ip: state for node, state in expected.items()}
        deadline = time.monotonic() + timeout
        states, error = {}, None
        while time.monotonic() < deadline:
            try:
                states, error = self.node_states(), None
            except Exception as exc:  # the dashboard is not up yet: keep asking until the deadline
                error = exc
            if all(states.get(ip) == state for ip, state in wanted.items()):
                return
            time.sleep(0.5)
        raise ClusterError(
            f"cluster {self.name}: after {timeout:.0f} s Ray reports {states or error!r}, "
            f"expected {wanted}\n{self.logs()}"
        )

    def kill_raylet(self, node: Node) -> int:
        """SIGKILL `node`'s raylet (Ray loses the node); returns its host pid."""
        pid = next((p for p in netns_pids(node.netns) if comm(p) == "raylet"), None)
        if pid is None:
            raise ClusterError(f"no raylet runs on {node.netns} ({node.ip})")
        os.kill(pid, signal.SIGKILL)
        return pid

    def logs(self, lines: int = 15) -> str:
        """The `ray start` output and the tail of each node's main Ray logs (stack frames left out)."""
        parts = []
        for node in self.nodes:
            # (not session_latest: an absolute symlink, which would resolve on the host)
            sessions = sorted(node.root.glob("tmp/ray/session_2*/logs"))
            files = [state_dir(self.name) / f"{node.name}.log"] + [
                sessions[-1] / f for f in ("gcs_server.out", "raylet.out", "raylet.err") if sessions
            ]
            for f in files:
                with suppress(OSError):
                    text = f.read_text(errors="replace").splitlines()
                    tail = [line for line in text if not line.startswith(("/", "*** "))][-lines:]
                    parts.append(f"--- {node.netns} {f.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        remove(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Driver(subprocess.Popen):
    """A Ray driver on a cluster's head (`Cluster.driver`): a Popen with text stdout and stderr piped."""

    def __init__(self, cluster: Cluster, argv: list, result: Path, env: dict):
        super().__init__(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._cluster, self._result = cluster, result

    def result(self, timeout: float):
        """Wait for the driver to exit 0, then return what it emitted; or raise ClusterError with its
        stderr and the cluster's logs."""
        try:
            _, err = self.communicate(timeout=timeout)
        finally:
            self.kill()
        if self.returncode != 0 or not self._result.exists():
            how = "" if self.returncode else " without calling emit()"
            raise ClusterError(f"the driver exited with {self.returncode}{how}:\n{err[-5000:]}\n{self._cluster.logs()}")
        return json.loads(self._result.read_text())


def start(workers: int = 2, slots: int = 2, object_store_mb: int = 100, timeout: float = 240,
          env: dict = None, gpus: int = 0) -> Cluster:
    """Bring up a head (no CPUs) and `workers` nodes of `slots` CPUs (and `gpus` GPUs, as declared to Ray:
    there are none) each; return once Ray sees
    them all alive, or raise ClusterError (with the nodes' logs) within `timeout` seconds. Ray and
    the drivers run in `node_env(env)`."""
    if os.geteuid() != 0:
        raise ClusterError("a network-namespace cluster needs root (ip netns, unshare, mount): run the tests as root "
                           "(sudo make test), or leave out tests/test_multinode.py and tests/test_netns_cluster.py")
    deadline = time.monotonic() + timeout
    with locked():
        name = claim_name()
        state_dir(name).mkdir(parents=True)
        (state_dir(name) / "owner").write_text(process_identity(os.getpid()))
    try:
        subnet = SUBNET.format(name[len(PREFIX):])
        sh("ip", "link", "add", name, "type", "bridge")
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", name)
        sh("ip", "link", "set", name, "up")
        ips = {n: f"{subnet}.{i}" for i, n in enumerate(["head"] + [f"w{i}" for i in range(1, workers + 1)], 2)}
        hosts = state_dir(name) / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {name}-{n}\n" for n, ip in ips.items()))
        shared = shared_paths([REPO, sys.prefix, sys.base_prefix, Path(sys.executable).resolve().parent.parent,
                               os.getcwd(), *filter(os.path.isdir, sys.path)])
        cluster = Cluster(name, [add_node(name, n, ip, hosts, shared) for n, ip in ips.items()], node_env(env), shared)
        if cluster.client_env:
            token = os.open(cluster.client_env["RAY_AUTH_TOKEN_PATH"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(token, "w") as file:
                file.write(cluster.env["RAY_AUTH_TOKEN"])
        common = ["--node-ip-address", "{ip}", "--object-store-memory", str(object_store_mb << 20),
                  "--disable-usage-stats", *FIXED_PORTS]
        start_ray(cluster, cluster.head, deadline, common + [
            "--head", "--num-cpus", "0", "--port", str(HEAD_PORT),
            "--dashboard-host", "0.0.0.0", "--dashboard-port", str(DASHBOARD_PORT)])
        for worker in cluster.workers:
            start_ray(cluster, worker, deadline, common + ["--address", cluster.address, "--num-cpus", str(slots),
                                                          "--num-gpus", str(gpus)])
        cluster.wait_for_states({n: "ALIVE" for n in cluster.nodes}, deadline - time.monotonic())
        return cluster
    except BaseException:
        remove(name)
        raise


def claim_name() -> str:
    """The first `rmpi<k>` with nothing left on this machine and a subnet no interface uses (under the lock)."""
    taken, host_addrs = set(cluster_names()), sh("ip", "-o", "-4", "addr", "show")
    for k in range(256):
        if f"{PREFIX}{k}" not in taken and f"inet {SUBNET.format(k)}." not in host_addrs:
            return f"{PREFIX}{k}"
    raise ClusterError(f"no free subnet {SUBNET.format('<k>')}.0/24")


def shared_paths(paths: list) -> list:
    """The top-most of `paths`, as given and resolved, that lie under /tmp or /dev/shm: what each node's
    tmpfs there shows of the machine's."""
    inside = {p for path in paths for p in (os.path.abspath(path), os.path.realpath(path)) if private(p)}
    return sorted(p for p in inside if not any(p.startswith(q + "/") for q in inside))


def private(path: str) -> bool:
    """Whether `path` lies under a node's own /tmp or /dev/shm."""
    return any(path.startswith(m + "/") for m in PRIVATE)


def add_node(cluster: str, node: str, ip: str, hosts: Path, shared: list) -> Node:
    """A network namespace wired to the bridge, and the node's init holding its other namespaces."""
    netns = f"{cluster}-{node}"
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", netns, "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "link", "set", netns, "master", cluster, "up")
    sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", netns, "link", "set", "eth0", "up")
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    with open(state_dir(cluster) / f"{node}.log", "ab") as log:
        init = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--pid", "--kill-child", "--mount-proc", "--uts",
             sys.executable, __file__, "node-init", netns, str(hosts), *shared],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
    ready = init.stdout.readline()  # the init closes stdout after its mounts (or dies)
    init.stdout.close()
    children = Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()
    if ready != b"ready\n" or not children:
        raise ClusterError(f"node {netns} did not start: see {state_dir(cluster) / f'{node}.log'}")
    return Node(node, netns, ip, int(children[0]))


def start_ray(cluster: Cluster, node: Node, deadline: float, args: list, attempts: int = 3) -> None:
    """`ray start` on `node`; it returns once the node's Ray daemons run. A failed start is cleared
    and tried again: on a loaded machine the raylet may abort because it gives its agents only
    ~15 s to come up (not configurable in Ray 2.60); nodes start one at a time for the same reason.
    The node's Ray runs in a session of its own: with the kernel's autogroup scheduling, each node
    then gets a CPU share of its own, as a machine would."""
    # Through this interpreter, not the venv's `ray` script: the script names the interpreter its venv was built
    # with, which a venv seen under another path (a bind mount) does not share with the nodes.
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    argv = cluster.enter(node) + ["setsid", *ray] + [a.format(ip=node.ip) for a in args]
    for attempt in range(1, attempts + 1):
        with open(state_dir(cluster.name) / f"{node.name}.log", "ab") as log:
            log.write(f"--- {' '.join(argv)} (attempt {attempt})\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, env=cluster.env, stdout=log, stderr=log)
        with suppress(subprocess.TimeoutExpired):
            if proc.wait(timeout=max(0.0, deadline - time.monotonic())) == 0:
                return
        kill_all_but_init(node)
        proc.wait()
        if time.monotonic() > deadline:
            break
    raise ClusterError(f"ray start failed on {node.netns} ({node.ip}), {attempt} attempt(s)\n{cluster.logs()}")


def kill_all_but_init(node: Node) -> None:
    """SIGKILL every process in `node`'s PID namespace except its init."""
    pid_ns = pid_namespace(node.init_pid)

    def others():
        return [p for p in netns_pids(node.netns) if p != node.init_pid and pid_namespace(p) == pid_ns]

    kill_until_gone(others, f"processes of {node.netns}")


def node_env(changes: dict = None) -> dict:
    """The environment of a node: this process's with Ray's token authentication on, as KubeRay's
    `authOptions: {mode: token}` sets it in every pod (a token of this cluster's own), then `changes`
    (a None value removes the variable); the mpi runtime env registered, the venv first on PATH."""
    from raympi.registration import registration_env

    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_AUTH_TOKEN_PATH": None}
    env = {**os.environ, "RAY_ADDRESS": None, **auth, **(changes or {})}
    env = {k: v for k, v in env.items() if v is not None}
    env.update(registration_env(env))
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def node_init(hostname: str, hosts: str, shared: list) -> None:
    """PID 1 of a node: private /tmp, /dev/shm (showing the machine's `shared` paths) and /etc/hosts, a
    hostname, then reap orphans forever."""
    staging = Path(hosts).with_name(f"{hostname}.mnt")  # in the state dir, removed with it
    staging.mkdir()
    for mount_point, size in PRIVATE.items():
        mount_private(mount_point, size, [p for p in shared if p.startswith(mount_point + "/")], staging)
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    socket.sethostname(hostname)
    print("ready", flush=True)
    os.close(1)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


def mount_private(mount_point: str, size: str, shared: list, staging: Path) -> None:
    """A fresh tmpfs on `mount_point` in which the machine's `shared` paths under it stay visible: it is
    made at the (empty) `staging` dir, they are bound into it, then it is moved over `mount_point`."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", staging], check=True)
    for path in shared:
        inside = staging / os.path.relpath(path, mount_point)
        inside.mkdir(parents=True)
        subprocess.run(["mount", "--rbind", path, inside], check=True)
    subprocess.run(["mount", "--move", staging, mount_point], check=True)


def remove(name: str) -> None:
    """Kill every process in cluster `name`'s namespaces, then delete its namespaces, links and state."""
    namespaces = [ns for ns in netns_names() if cluster_of(ns) == name]
    kill_until_gone(lambda: [p for ns in namespaces for p in netns_pids(ns)], f"processes of {name}")
    for ns in namespaces:
        sh("ip", "netns", "delete", ns)
    for link in link_names():
        if cluster_of(link) == name:
            subprocess.run(["ip", "link", "delete", link], capture_output=True)  # a veth may go with its netns
    shutil.rmtree(state_dir(name), ignore_errors=True)


def kill_until_gone(find_pids, what: str, timeout: float = 30) -> None:
    """SIGKILL the processes `find_pids()` names, again and again, until all of them have exited
    (a process leaves its namespaces before it is fully gone)."""
    deadline = time.monotonic() + timeout
    found = {}
    while True:
        found.update({pid: process_identity(pid) for pid in find_pids() if pid not in found})
        if not (alive := [pid for pid, ident in found.items() if ident and process_identity(pid) == ident]):
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} survive SIGKILL: {alive}")
        for pid in alive:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def cluster_names() -> list:
    """Clusters with anything left on this machine: a namespace, a link or a state directory."""
    names = netns_names() + link_names() + ([p.name for p in STATE_ROOT.iterdir()] if STATE_ROOT.is_dir() else [])
    return sorted({cluster_of(n) for n in names} - {None}, key=lambda n: int(n[len(PREFIX):]))


def orphans() -> list:
    """Clusters whose creating process is gone (a crashed run, `up`); under the lock, so a cluster
    being created is never among them."""
    with locked():
        return [name for name in cluster_names() if not owner_alive(name)]


def owner_alive(name: str) -> bool:
    with suppress(OSError, ValueError):
        owner = (state_dir(name) / "owner").read_text()
        return process_identity(int(owner.split()[0])) == owner
    return False


def process_identity(pid: int) -> str:
    """`pid` and its start time (tells a reused pid apart); empty when the process is gone (or a zombie)."""
    with suppress(OSError):
        state, *fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return f"{pid} {fields[18]}" if state != "Z" else ""
    return ""


@contextmanager
def locked():
    """Serializes claiming names and picking orphans among processes on this machine."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cluster_of(name: str):
    match = NAME_RE.match(name)
    return match and match.group(1)


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


def netns_names() -> list:
    return [ns["name"] for ns in json.loads(sh("ip", "-j", "netns", "list") or "[]")]


def link_names() -> list:
    return [link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show"))]


def netns_pids(netns: str) -> list:
    return [int(p) for p in sh("ip", "netns", "pids", netns).split()]


def pid_namespace(pid: int) -> str:
    with suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/pid")
    return ""


def comm(pid: int) -> str:
    with suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def sh(*argv: str) -> str:
    """Run a command; its stdout, or ClusterError with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise ClusterError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ways_in(cluster: Cluster) -> str:
    """How to reach `cluster`: a shell on each node, a job submitted from here, with what its token auth asks of a
    client (the token's file, not the token); how to remove it."""
    client = " ".join(f"{name}={value}" for name, value in cluster.client_env.items())
    lines = [f"  {node.netns:12} {node.ip:12} a shell there: {shlex.join(cluster.enter(node))} "
             f"env {client} PATH={VENV_BIN}:\"$PATH\" bash" for node in cluster.nodes]
    if client:
        lines.append(f"  Ray's token authentication is on: a client needs {client} (the file only root reads)")
    lines += [f"  dashboard and jobs: {cluster.dashboard_url}, e.g. from here:",
              f"    {client} {VENV_BIN / 'ray'} job submit --address {cluster.dashboard_url} -- "
              "python -c 'import ray; ray.init(); print(len(ray.nodes()), \"nodes\")'",
              f"  remove it: make cluster-down (or: {sys.executable} {__file__} down {cluster.name})"]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a cluster and leave it running")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--slots", type=int, default=2)
    down = commands.add_parser("down", help="remove clusters (default: those whose creator is gone)")
    down.add_argument("names", nargs="*")
    init = commands.add_parser("node-init", help="(internal) PID 1 of a node")
    init.add_argument("hostname")
    init.add_argument("hosts")
    init.add_argument("shared", nargs="*")
    args = parser.parse_args(argv)

    if args.command == "node-init":
        node_init(args.hostname, args.hosts, args.shared)
    elif args.command == "up":
        began = time.monotonic()
        cluster = start(args.workers, args.slots)
        print(f"cluster {cluster.name} up in {time.monotonic() - began:.1f} s (Ray at {cluster.address})")
        print(ways_in(cluster))
    else:
        for name in args.names or orphans():
            began = time.monotonic()
            remove(name)
            print(f"removed {name} in {time.monotonic() - began:.1f} s")


if __name__ == "__main__":
    main()
