"""The ranks' control channel and the daemon launchers against strangers: nothing a stranger sends is unpickled or
run, a wrong key is refused, the job goes on as if nobody had called, and rank 0 listens only where its peers are.

What listens is read from the kernel (/proc/<pid>/net/tcp*), not from our code."""

import collections
import contextlib
import json
import os
import pickle
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import AuthenticationError
from pathlib import Path

import pytest
import ray

from benchmarks import procinfo
from conftest import TESTS_DIR, recorded_pids, wait_until_gone
import raympi
from raympi import channel, mpi_init
from raympi.channel import Channel, ChannelListener, new_key
from raympi.daemon_launcher import REFUSED, DaemonLauncher
from raympi.launch_agent import LAUNCHERS_VAR, WORLD_VAR
from raympi.world_key import KeyServer
from scripts.netns_cluster import netns_pids
from sockets import connected_to, listening, reachable

sys.path.insert(0, str(TESTS_DIR / "job_code"))
import mpi_jobs  # noqa: E402

RANKS = 3


class Opens:
    """Unpickling it creates a file: proof that a stranger's bytes were deserialized."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def framings(payload: bytes) -> dict:
    """A pickle as length-prefixed framings might carry it (multiprocessing.connection's: "!i", and -1 + "!Q")."""
    framed = {f"{name}-length": struct.pack(fmt, len(payload)) + payload
              for name, fmt in (("4-byte big-endian", "!I"), ("4-byte little-endian", "<I"),
                                ("8-byte big-endian", "!Q"), ("8-byte little-endian", "<Q"))}
    return {**framed, "raw": payload, "-1 then 8-byte length": struct.pack("!i", -1) + struct.pack("!Q", len(payload))
            + payload}


def send_as_stranger(address, data: bytes) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(2)
        try:
            sock.connect(address)
            sock.sendall(data)
            sock.recv(4096)  # whatever the listener answers first (a challenge), or a timeout
        except OSError:
            pass


class Flood:
    """Strangers at `address`, all at once: `held` connections open at a time (half silent, half sending a pickle
    and garbage), the oldest replaced by new ones as fast as the listener takes them, until the block ends."""

    def __init__(self, address, payload: bytes, held: int = 400):
        self._address, self._payload, self._held = address, payload, held
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flood, daemon=True)
        self.opened = 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _flood(self) -> None:
        held = collections.deque()
        while not self._stop.is_set():
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(self._address)
            if self.opened % 2:
                with contextlib.suppress(OSError):
                    sock.send(self._payload + os.urandom(64))
            held.append(sock)
            self.opened += 1
            if len(held) > self._held:
                held.popleft().close()
                time.sleep(0.001)
        for sock in held:
            sock.close()


def limit_open_files(pid: int, more: int) -> None:
    """Let `pid` open `more` files than it has open now, and no more (its RLIMIT_NOFILE)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + more, hard))


def channels(rank_pids) -> set:
    """Where rank 0 channels listen: the addresses a rank listens on that other ranks are connected to (Open MPI's
    TCP listeners are on the wildcard address, so connections to them name another). Ray may have prestarted an
    idle world beside the one at work: one each."""
    listened = {address: pid for pid in rank_pids for address in listening(pid)}
    found = {address for other in rank_pids for address in connected_to(other)
             if listened.get(address, other) != other}
    assert found, f"no rank is connected to another's listener; listeners: {listened}"
    return found


@ray.remote(runtime_env={"mpi": {"args": ["--oversubscribe", "-n", str(RANKS)],
                                 "worker_entry": "mpi_entries.hold_until_released"}}, max_retries=0)
def held_world(path: str) -> int:
    mpi_init()
    import mpi_entries

    return mpi_entries.hold_until_released(path)


@pytest.mark.usefixtures("local_ray")
def test_strangers_on_every_port_of_a_world_unpickle_nothing_and_change_nothing(tmp_path):
    pids_file, marker = tmp_path / "pids", tmp_path / "unpickled"
    result = held_world.remote(str(pids_file))
    deadline = time.monotonic() + 120
    while len(pids_file.read_text().splitlines() if pids_file.exists() else []) < RANKS:
        assert time.monotonic() < deadline, "the world did not start"
        time.sleep(0.2)
    ranks = {int(line.split()[0]) for line in pids_file.read_text().splitlines()}
    processes = recorded_pids(pids_file)  # the ranks and mpirun
    ports = {reachable(address) for pid in processes for address in listening(pid)}
    assert len(ports) > 1, f"listeners: {sorted(ports)}: Open MPI's and Ray's, besides ours"
    payloads = framings(pickle.dumps(Opens(marker)))
    for address in sorted(ports):
        for data in payloads.values():
            send_as_stranger(address, data)
    assert not marker.exists(), "a stranger's pickle was unpickled"

    (rank0_channel,) = channels(ranks)
    assert rank0_channel[0] == "127.0.0.1", "a world on one node is supervised over loopback only"
    (rank0,) = [pid for pid in ranks if rank0_channel in listening(pid)]
    limit_open_files(rank0, channel.MAX_HANDSHAKES + 64)
    with Flood(rank0_channel, payloads["4-byte big-endian-length"]) as flood:
        while flood.opened < 1000:
            time.sleep(0.1)
        (tmp_path / "pids.go").touch()  # the world runs to its end under the flood
        assert ray.get(result, timeout=120) == sum(range(RANKS))
    assert not marker.exists(), "a stranger's pickle was unpickled"


def test_a_wrong_key_is_refused_and_its_bytes_never_unpickled(tmp_path):
    key, marker, served = new_key(), tmp_path / "unpickled", []
    listener = ChannelListener("127.0.0.1", key, lambda channel, _ip: served.append(channel))
    try:
        with pytest.raises(AuthenticationError):
            Channel.connect(listener.address, new_key())
        send_as_stranger(listener.address, framings(pickle.dumps(Opens(marker)))["4-byte big-endian-length"])
        peer = Channel.connect(listener.address, key)
        peer.send(("hello", 1))
        _wait_for(lambda: served)
        time.sleep(1)  # time for a stranger to be served, were it to be
        (trusted,) = served
        assert trusted.receive() == ("hello", 1)
        assert not marker.exists()
    finally:
        listener.close()


# What PRRTE's ssh launcher puts before the daemon's command for a user whose shell is sh (plm_ssh_module.c, setup_shell).
SH_PROFILE = "( test ! -r ./.profile || . ./.profile;"


def launch_agent(address, world: str, command: str, **popen) -> subprocess.Popen:
    """raympi.launch_agent as mpirun runs it (`<agent> <host> <command...>`), for a daemon launcher at `address` of
    `world` (whose key this node's KeyServer keeps)."""
    env = {**os.environ, LAUNCHERS_VAR: json.dumps({address[0]: address[1]}), WORLD_VAR: world}
    return subprocess.Popen([sys.executable, "-m", "raympi.launch_agent", address[0], *command.split(" ")], env=env,
                            stderr=subprocess.PIPE, text=True, **popen)


def stand_in_daemon(folder: Path) -> str:
    """A program named as Open MPI's daemon that runs its argument as a shell command: what these tests start."""
    program = folder / "prted"
    program.write_text('#!/bin/sh\nexec /bin/sh -c "$1"\n')
    program.chmod(0o755)
    return str(program)


def started_launcher(tmp_path: Path, **options):
    """A DaemonLauncher on this node listening with a new world's key, kept here as raympi.placement keeps it; the
    launcher, its address, the world, and a command line prefix that starts the stand-in daemon."""
    world, key, ip = secrets.token_hex(16), new_key(), ray.util.get_node_ip_address()
    KeyServer().keep(world, key)
    launcher = DaemonLauncher.options(name=f"launcher-{world}-{ip}", namespace="raympi", **options).remote(ip)  # as placed
    address = tuple(ray.get(launcher.listen.remote(key), timeout=60))
    return launcher, address, world, stand_in_daemon(tmp_path)


def started_pid(path: Path, agent: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text().endswith("\n")):
        assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1]
        time.sleep(0.1)
    return int(path.read_text())


@pytest.mark.usefixtures("local_ray")
def test_a_daemon_launcher_runs_only_an_mpi_daemon_an_agent_with_the_key_asks_for_and_nothing_outlives_it(tmp_path):
    launcher, address, world, daemon = started_launcher(tmp_path)
    marker = tmp_path / "unpickled"
    pid = ray.get(launcher.__ray_call__.remote(lambda _: os.getpid()))
    assert listening(pid) >= {address} and address[0] == ray.util.get_node_ip_address(), \
        "it listens on the node's IP, never the wildcard"
    for data in framings(pickle.dumps(Opens(marker))).values():
        send_as_stranger(address, data)
    stranger = launch_agent(address, secrets.token_hex(16), f"{daemon} 'touch {marker}'")
    assert stranger.wait(timeout=60) == 255 and "does not answer" in stranger.stderr.read()
    for command in (f"touch {marker}", f"A=1;export A;touch {marker}", f"{daemon};touch {marker}",
                    f"sh -c '{daemon} x'", f"{SH_PROFILE} touch {marker} )"):
        refused = launch_agent(address, world, command)
        assert refused.wait(timeout=60) == REFUSED, command
        assert "refused to run it" in refused.stderr.read()
    assert not marker.exists(), "a stranger's pickle was unpickled, or a command run that is no MPI daemon"

    # As PRRTE writes it for a user whose shell is sh (the image's user): settings and the daemon, in its wrapper.
    said = tmp_path / "said"
    wrapped = launch_agent(address, world, f"{SH_PROFILE} WORD=set ; export WORD ; {daemon} 'echo $WORD > {said}' )")
    assert wrapped.wait(timeout=60) == 0 and said.read_text() == "set\n", wrapped.stderr.read()
    failing = launch_agent(address, world, f"{daemon} 'echo no prted here >&2; exit 3'")
    assert failing.wait(timeout=60) == 3, "the daemon's status is the agent's"
    assert "mpirun's daemon on {} failed (exit status 3): no prted here".format(address[0]) in failing.stderr.read()
    watched = launcher.failure.remote()  # asked after the failure: it is still this call's (since the last settle)
    assert ray.get(watched, timeout=10).endswith("(exit status 3): no prted here"), "told to the world's caller"
    ray.get(launcher.settle.remote())
    later = launcher.failure.remote()
    launch_agent(address, world, f"{daemon} 'echo again >&2; exit 4'").wait(timeout=60)
    assert ray.get(later, timeout=10).endswith("(exit status 4): again"), "not the failure of an earlier world"

    stopped = launch_agent(address, world, f"{daemon} 'sleep 600 & echo $! > {tmp_path / 'a'}; wait'")
    pid = started_pid(tmp_path / "a", stopped)
    stopped.terminate()  # as mpirun stops its agents
    assert stopped.wait(timeout=30) == 128 + signal.SIGTERM
    assert not wait_until_gone({pid}), "the daemon outlived its agent"

    orphaned = launch_agent(address, world, f"{daemon} 'sleep 600 & echo $! > {tmp_path / 'b'}; wait'")
    pid = started_pid(tmp_path / "b", orphaned)
    ray.kill(launcher)  # as when its placement group is removed, or its node lost
    assert not wait_until_gone({pid}), "the daemon outlived its launcher"
    # Ray SIGKILLs a killed actor's child, the daemon's guard: its status reaches the agent, or the connection is lost.
    assert orphaned.wait(timeout=30) in (128 + signal.SIGKILL, 255), orphaned.stderr.read()


@pytest.mark.usefixtures("local_ray")
def test_a_flood_of_strangers_at_once_keeps_no_agent_out_of_a_daemon_launcher_short_of_files(tmp_path):
    """Hundreds of connections held open at once, renewed as they are dropped; the launcher may open only a few
    more files than its handshakes in flight take: it accepts on through running out of them, and agents with the
    key still get their daemons run."""
    launcher, address, world, daemon = started_launcher(tmp_path)
    limit_open_files(ray.get(launcher.__ray_call__.remote(lambda _: os.getpid())), channel.MAX_HANDSHAKES + 32)
    with Flood(address, pickle.dumps(Opens(tmp_path / "unpickled"))) as flood:
        while flood.opened < 1000:
            time.sleep(0.1)
        for number in range(3):
            agent = launch_agent(address, world, f"{daemon} 'exit {number}'")
            assert agent.wait(timeout=60) == number, agent.stderr.read()
    assert not (tmp_path / "unpickled").exists()


@pytest.mark.usefixtures("local_ray")
def test_calls_waited_for_in_a_world_leave_no_poll_of_its_launchers_to_crowd_out_the_next(tmp_path):
    """raympi.get watches the world's daemon launchers while it waits, and stops once it returns: else, with room for 4
    calls at once (Ray's default is 1000), the polls of past calls would keep a later one's from ever starting."""
    launcher, address, world, daemon = started_launcher(tmp_path, max_concurrency=4)
    mpi = {"launchers": {address[0]: address[1]}, "world": world}
    for value in range(10):
        assert raympi.get(echo.remote(value), mpi, timeout=60) == value
    watched = launcher.failure.remote()
    launch_agent(address, world, f"{daemon} 'exit 5'").wait(timeout=60)
    assert ray.get(watched, timeout=30).endswith("(exit status 5): ")


@ray.remote
def echo(value):
    return value


def test_a_silent_stranger_holds_up_no_peer_and_is_dropped(monkeypatch):
    monkeypatch.setattr(channel, "HANDSHAKE_TIMEOUT_S", 2.0)
    key, served = new_key(), []
    listener = ChannelListener("127.0.0.1", key, lambda channel, _ip: served.append(channel))
    try:
        with socket.create_connection(listener.address) as silent:
            peer = Channel.connect(listener.address, key)  # while the stranger holds its connection
            _wait_for(lambda: served)
            peer.send("go")
            assert served[0].receive() == "go"
            silent.settimeout(30)
            silent.recv(4096)  # the challenge
            assert silent.recv(4096) == b"", "the silent stranger is disconnected after the handshake timeout"
    finally:
        listener.close()


def mpi_rank(pid: int) -> bool:
    """Whether `pid` is an MPI rank: a template's child (raympi.template; rank 0 renames itself as a Ray worker), or a
    fresh one, which mpirun gives PMIX_RANK (a forked rank's /proc environ is its template's)."""
    if procinfo.TEMPLATE in procinfo.title(procinfo.parent(pid)):
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(var.startswith(b"PMIX_RANK=") for var in f.read().split(b"\0"))
    except OSError:
        return False


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_across_nodes_rank0_listens_on_its_node_ip_with_ray_token_auth_on(netns_cluster):
    """The namespace cluster runs Ray with token authentication, as KubeRay's authOptions sets it up."""
    assert netns_cluster.env["RAY_AUTH_MODE"] == "token" and netns_cluster.headers
    shared = Path(tempfile.mkdtemp(prefix="raympi-", dir="/var/tmp"))  # every node sees it (/tmp is private)
    started, release = shared / "started", shared / "release"
    driver = netns_cluster.driver(f"""
        import mpi_jobs
        emit(mpi_jobs.two_nodes_held(started={str(started)!r}, release={str(release)!r}))
    """, cwd=TESTS_DIR / "job_code")
    try:
        _wait_for(lambda: started.exists() or driver.poll() is not None, timeout=600)
        assert started.exists(), driver.communicate()[1][-5000:]
        ranks = [pid for node in netns_cluster.workers for pid in netns_pids(node.netns) if mpi_rank(pid)]
        assert {ip for ip, _ in channels(ranks)} == {started.read_text()}, "rank 0 listens on its node's IP only"
        release.touch()
        assert driver.result(timeout=300) == 1
    finally:
        release.touch()
        driver.kill()
        shutil.rmtree(shared, ignore_errors=True)
