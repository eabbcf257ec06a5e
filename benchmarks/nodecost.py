"""What a launch costs each node of a namespace cluster (scripts/netns_cluster.py), seen from outside the product:
CPU time and peak memory from cgroup v1 (a cpuacct and a memory cgroup per node, holding every process of the node
and so every process forked there later; needs root), and the Ray jobs that Ray's state API lists."""

import time
from contextlib import contextmanager, suppress
from pathlib import Path

from benchmarks import procinfo
from scripts import netns_cluster

CGROUPS = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpuacct", "memory")
MB = 1e6


class NodeCgroups:
    """A node's own cpuacct and memory cgroups, children of those its processes are in, holding all of them."""

    def __init__(self, node: netns_cluster.Node):
        self.node = node
        self.dirs = [CGROUPS / c / cgroup_of(node.init_pid, c).lstrip("/") / f"raympi-bench-{node.netns}"
                     for c in CONTROLLERS]
        self.cpuacct, self.memory = self.dirs
        for group in self.dirs:
            group.mkdir(exist_ok=True)  # or left, empty, by a run that crashed
        # A process forked while its parent moves may stay behind: move until none is left.
        while stray := set(netns_cluster.netns_pids(node.netns)) - pids(self.memory):
            for group in self.dirs:
                move(stray, group)

    def processes(self) -> set:
        return pids(self.cpuacct)

    def cpu_s(self) -> float:
        return int((self.cpuacct / "cpuacct.usage").read_text()) / 1e9

    def restart_peak(self) -> int:
        """Restart the memory peak at the current usage; return that usage (bytes)."""
        (self.memory / "memory.max_usage_in_bytes").write_text("0")
        return int((self.memory / "memory.usage_in_bytes").read_text())

    def peak(self) -> int:
        return int((self.memory / "memory.max_usage_in_bytes").read_text())

    def remove(self, timeout: float = 10) -> None:
        """Move the node's processes back to the parent cgroups, then delete the node's."""
        deadline = time.monotonic() + timeout
        for group in self.dirs:
            while group.exists():
                move(pids(group), group.parent)
                try:
                    group.rmdir()
                except OSError:  # busy: a process forked meanwhile
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


@contextmanager
def node_cgroups(nodes: list):
    """{node name: NodeCgroups} of `nodes` (netns_cluster.Node), removed at the end."""
    groups = {}
    try:
        for node in nodes:
            groups[node.netns] = NodeCgroups(node)
        yield groups
    finally:
        for group in groups.values():
            group.remove()


class Window:
    """Costs from its creation until `close()`: CPU-s above each node's idle rate, peak memory above the usage
    at the start, and the Ray jobs created meanwhile."""

    def __init__(self, groups: dict, cluster):
        self._groups, self._cluster = groups, cluster
        self._jobs = ray_jobs(cluster)
        self._began, self._opened = time.monotonic(), time.time()
        self._usage = {name: g.restart_peak() for name, g in groups.items()}
        self._cpu = {name: g.cpu_s() for name, g in groups.items()}

    def wait_for_exits(self, timeout: float) -> int:
        """Wait until the processes started on the nodes since the window opened have exited; return how many
        still run after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (running := self._started_since()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(running)

    def _started_since(self) -> list:
        return [pid for g in self._groups.values() for pid in g.processes() if runs_since(pid, self._opened)]

    def close(self, idle: dict) -> dict:
        """{"cpu_s": {node: CPU-s}, "peak_mb": {node: MB}, "new_ray_jobs": n}; `idle`: {node: CPU-s per s}."""
        seconds = time.monotonic() - self._began
        cpu = {name: g.cpu_s() - self._cpu[name] - idle[name] * seconds for name, g in self._groups.items()}
        peak = {name: (g.peak() - self._usage[name]) / MB for name, g in self._groups.items()}
        return {"cpu_s": cpu, "peak_mb": peak, "new_ray_jobs": len(ray_jobs(self._cluster) - self._jobs)}


def idle_rates(groups: dict, seconds: float) -> dict:
    """{node: CPU-s per second} that each node spends over `seconds` while nothing runs on it."""
    before = {name: g.cpu_s() for name, g in groups.items()}
    time.sleep(seconds)
    return {name: (g.cpu_s() - before[name]) / seconds for name, g in groups.items()}


def ray_jobs(cluster) -> set:
    """IDs of every job (finished ones too) that Ray's state API lists on `cluster`."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(cluster.dashboard_url, headers={"Content-Type": "application/json", **cluster.headers})
    jobs = client.list(StateResource.JOBS, ListApiOptions(limit=10_000, timeout=30), raise_on_missing_output=True)
    return {job.job_id or job.submission_id for job in jobs}


def runs_since(pid: int, moment: float) -> bool:
    """`pid` runs (neither gone nor a zombie) and started after `moment` (a time.time())."""
    with suppress(OSError):
        started = procinfo.started(pid)
        return started > moment and procinfo.alive(pid, started)
    return False


def cgroup_of(pid: int, controller: str) -> str:
    """The path of `pid`'s cgroup in the v1 hierarchy of `controller`."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise LookupError(f"no cgroup v1 hierarchy has the {controller} controller")


def pids(group: Path) -> set:
    return set(map(int, (group / "cgroup.procs").read_text().split()))


def move(processes, group: Path) -> None:
    for pid in processes:
        with suppress(ProcessLookupError):  # it exited meanwhile
            (group / "cgroup.procs").write_text(str(pid))


def memory_available_mb() -> float:
    """MemAvailable of /proc/meminfo."""
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    return int(line.split()[1]) * 1024 / MB
