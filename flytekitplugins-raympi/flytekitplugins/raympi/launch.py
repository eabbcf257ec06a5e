"""The driver side of a RayMPIJob run: connect to Ray (or start an embedded one), reserve the world's
slots, run rank 0 inside an MPI world started by the `mpi` runtime env (or a warm one, see warm.py), and bring back
its outputs."""

import ipaddress
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import cloudpickle
import psutil
import ray
from flytekit import Deck, logger
from flytekit.core.context_manager import ExecutionParameters, FlyteContext
from flytekit.models.literals import LiteralMap
from ray.exceptions import GetTimeoutError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

import raympi
from raympi.flavours import FLAVOURS
from raympi.ray_internals import bundle_nodes, job_runtime_env, nodes_offering

from . import blobs, ranks, singleton, warm
from .config import ActiveDeadlineExceeded, RayMPIJob, switch
from .deck import world_deck
from .flytekit_internals import checkpoint_locations, write_deck
from .ranks import (PEER_ENTRY, Assignment, Rank0Result, literals_from_bytes, literals_to_bytes, remove_working_dirs,
                    run_rank0)

TEMPLATES_VAR = "RAYMPI_TEMPLATES"
# A failed MPI world is not retried by Ray: Flyte's `retries` decide that.
_RANK0 = ray.remote(max_retries=0)(run_rank0)
_REMOVE_WORKING_DIRS = ray.remote(num_cpus=0, max_retries=0)(remove_working_dirs)
# How long a failed run waits for its working directories to be removed before it reports.
_REMOVAL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Ray:
    """A Ray that this module connected to: a cluster at `address`, or (address None) the embedded local Ray,
    started with `cpus` and `gpus`; `gcs_address` tells it from a Ray connected to since."""

    address: Optional[str]
    gcs_address: str
    cpus: int = 0
    gpus: int = 0


_connected: Optional[_Ray] = None


def run(task, ctx: FlyteContext, inputs: LiteralMap) -> LiteralMap:
    """Run a flytekit task as an MPI world; its outputs as rank 0 made them, its decks and the world's added."""
    params = ctx.user_space_params
    marks: Dict[str, float] = {}

    def assign(run_id: str, driver_node: str) -> Assignment:
        return Assignment(task=task, inputs=literals_to_bytes(inputs),
                          raw_output_prefix=ctx.file_access.raw_output_prefix,
                          output_metadata_prefix=params.output_metadata_prefix, checkpoint=_checkpoint(params),
                          mode=ctx.execution_state.mode, execution_id=params.execution_id, task_id=params.task_id,
                          driver_node=driver_node, run_id=run_id)

    try:
        outputs, files, decks, ranks = run_world(task.task_config, task.name, assign, task.enable_deck,
                                                 _deadline(task), marks)
    except Exception as error:
        if getattr(error, "mpi_world", None):  # rank 0 ran a task with decks
            params.decks.append(world_deck(error.mpi_world, marks, failure(error)))
            _output_local_decks(task, ctx)
        raise
    # Rank 0's decks are the task's: on a cluster flytekit's entrypoint writes them after the task, as for any task.
    params.decks.extend(Deck(name, html, auto_add_to_deck=False) for name, html in decks.items())
    if ranks:
        params.decks.append(world_deck(ranks, marks, failure=None))
    _output_local_decks(task, ctx)
    return literals_from_bytes(blobs.unpack(outputs, files, ctx.file_access.get_random_local_directory()))


def run_world(config: RayMPIJob, name: str, assign: Callable[[str, str], Any], observed: bool,
              deadline: Tuple[Optional[float], str], marks: Dict[str, float]) -> Rank0Result:
    """Run a task named `name` as the MPI world `config` asks for, in either Flyte SDK: what rank 0 returns (see
    ranks.run_rank0). `assign(run_id, driver_node)` makes the assignment every rank runs (see ranks.Assignment);
    `observed`: the world keeps its ranks' output and marks for a deck; `deadline`: (seconds or None, the setting
    that gave it). `marks` gets the driver's timeline ("called", "placement reserved"), also when the world fails."""
    singleton.notice()
    templates = switch(TEMPLATES_VAR, on="forks every rank from a template process that imported flytekit",
                       off="starts every rank as a fresh interpreter")
    connected = _connect(config)
    embedded = connected is not None and connected.address is None
    # On a cluster each worker is a node of its own, as in an MPIJob. An embedded Ray is one node: one bundle for
    # the whole world, all of it rank 0's, so every rank sees all the GPUs reserved on the node (not rank 0's
    # share) and picks by its local rank.
    bundles, ranks_per_bundle = (1, config.world_size) if embedded else (config.workers, config.slots)
    resource = "GPU" if config.gpus_per_worker else "CPU"
    marks["called"] = time.time()
    reservation = placement_group([{resource: ranks_per_bundle}] * bundles, strategy="STRICT_SPREAD")
    try:
        _wait_for(reservation, config, bundles, resource, ranks_per_bundle)
        marks["placement reserved"] = time.time()
        assignment = assign(uuid.uuid4().hex, ray.get_runtime_context().get_node_id())
        runtime_env = _runtime_env(config, raympi.placement(reservation, ranks_per_bundle, config.runtime_env),
                                   embedded, [ranks.__name__] if templates else None)
        args = (list(sys.path), cloudpickle.dumps(assignment), observed)
        mpi = runtime_env["mpi"]
        warm_up = embedded and resource == "CPU" and warm.enabled()
        with warm.taken(runtime_env if warm_up else None) as world:
            try:
                if world is None:
                    call = _RANK0.options(
                        name=f"{name} (MPI rank 0)",
                        num_cpus=ranks_per_bundle if resource == "CPU" else 0,
                        num_gpus=ranks_per_bundle if resource == "GPU" else 0,
                        runtime_env=runtime_env,
                        scheduling_strategy=PlacementGroupSchedulingStrategy(reservation,
                                                                             placement_group_bundle_index=0),
                    ).remote(*args)
                    result = _result(call, mpi, deadline, stop=lambda: ray.cancel(call, force=True))
                else:
                    result = _result(world.run_whole_world.remote(*args), mpi, deadline, stop=lambda: ray.kill(world))
            except raympi.MPIWorldStartError:
                raise  # no rank ran: no working directory to remove
            except Exception:
                _remove_working_dirs(reservation, assignment.run_id)
                raise
    finally:
        remove_placement_group(reservation)
    if warm_up:
        warm.start(runtime_env, name=f"{name} (MPI rank 0, warm)")
    return result


def _output_local_decks(task, ctx: FlyteContext) -> None:
    """Write the task's decks in a local run, as flytekit's PythonTask does, and after a failure too (which flytekit's
    local runs do not; on a cluster its entrypoint writes the decks of a failed task as of any other), and say where
    at the default log level (flytekit says it at INFO)."""
    if task.enable_deck and ctx.execution_state.is_local_execution():
        path = write_deck(ctx.user_space_params, ctx.file_access.get_random_local_directory())
        logger.warning(f"{task.name.split('.')[-1]}: the task's decks (the MPI world's among them) are in file://{path}")


def failure(error: Exception) -> Tuple[int, str]:
    """Which rank failed a world, and how rank 0 ended."""
    cause = error.cause if isinstance(error, RayTaskError) else error
    if isinstance(cause, raympi.MPIRankError) and cause.rank != 0:
        return cause.rank, f"ended with the world (rank {cause.rank} failed)"
    return 0, f"raised {type(cause).__name__}: {cause}"


def _checkpoint(params: ExecutionParameters) -> Optional[Tuple[str, Optional[str]]]:
    """The attempt's checkpoint that flytekit's entrypoint made (a SyncCheckpoint): (destination, previous
    attempt's destination); None where there is none (a local run)."""
    try:
        checkpoint = params.checkpoint
    except NotImplementedError:
        return None
    return checkpoint_locations(checkpoint)


def _remove_working_dirs(reservation, run_id: str) -> None:
    """After a failed run, remove its ranks' working directories on every node of the world: ranks that rank 0
    ended, that were killed, or rank 0 frozen in an MPI call, could not remove their own."""
    nodes = set(bundle_nodes(reservation).values())
    removals = [_REMOVE_WORKING_DIRS.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(run_id) for node in nodes]
    ray.wait(removals, num_returns=len(removals), timeout=_REMOVAL_TIMEOUT_S)


def _result(ref, mpi: dict, deadline: Tuple[Optional[float], str], stop: Callable[[], None]) -> Rank0Result:
    seconds, limit = deadline
    try:
        return raympi.get(ref, mpi, timeout=seconds)
    except GetTimeoutError:
        stop()
        raise ActiveDeadlineExceeded(f"the MPI job ran longer than {limit}={seconds:g} s and was stopped") from None
    except RayTaskError as error:
        raise error.as_instanceof_cause() from None


def _deadline(task) -> Tuple[Optional[float], str]:
    timeout = task.metadata.timeout
    return deadline(task.task_config, timeout.total_seconds() if timeout else None)


def deadline(config: RayMPIJob, timeout: Optional[float]) -> Tuple[Optional[float], str]:
    """The sooner of run_policy.active_deadline_seconds and the task's Flyte `timeout` in seconds (which the Flyte
    backend enforces on a cluster, and local runs would ignore), with the setting's name."""
    limits = [(config.active_deadline_seconds, "run_policy.active_deadline_seconds"), (timeout, "timeout")]
    return min(((s, name) for s, name in limits if s is not None), default=(None, ""))


def _runtime_env(config: RayMPIJob, placement: dict, embedded: bool, preload: Optional[List[str]]) -> dict:
    """The task's runtime env with the world's `mpi` one; `preload`: what the template every rank forks from imports
    (see raympi.template), None for fresh ranks. Every rank runs this module's ranks, in either SDK (Flyte 2's own
    import starts a thread, which a template refuses: its ranks import it after the fork)."""
    mpirun_args = ["-n", str(config.world_size), *config.mpirun_args]
    cores = os.cpu_count() or 1
    if embedded and config.world_size > cores:  # on a cluster each node offers its ranks' slots
        logger.warning(f"{config.world_size} MPI ranks on a node with {cores} cores: oversubscribing")
        mpirun_args[:0] = FLAVOURS[config.flavour].oversubscribe
    env = dict(config.runtime_env or {})
    env["mpi"] = {"args": mpirun_args, "worker_entry": PEER_ENTRY, "flavour": config.flavour, **placement}
    if preload is not None:
        env["mpi"]["preload"] = preload
    return env


def _connect(config: RayMPIJob) -> Optional[_Ray]:
    """Connect to the Ray the task asks for: its `address`, else RAY_ADDRESS, else an embedded local Ray with the
    CPUs and GPUs it needs; return it (None: a Ray that this process connected to by itself, used unless `address`
    names another). A Ray connected to here is kept while it is what the task asks for, and replaced when not, with
    a log line saying why.

    On a cluster, the task's code (fast-registered, in the image, or beside `python wf.py`) is in the
    driver's working directory only: it becomes the job's working_dir, as flytekitplugins-ray does."""
    global _connected
    address = config.address or os.environ.get("RAY_ADDRESS")
    gpus = config.gpus_per_worker * config.workers
    cpus = 0 if gpus else config.world_size
    current = _current()
    if ray.is_initialized():
        leaving = _leaving(current, config.address, address, cpus, gpus)
        if leaving is None:
            return current
        logger.warning(f"RayMPIJob: {leaving}")
        ray.shutdown()
    if address:
        _from_a_lasting_thread(ray.init, address=address, runtime_env=_code_env(), logging_level=logging.WARNING)
        _connected = _Ray(address, ray.get_runtime_context().gcs_address)
        return _connected
    if current is not None and current.address is None:  # restarted: with all it had, not to restart again
        cpus, gpus = max(cpus, current.cpus), max(gpus, current.gpus)
    cpus = max(os.cpu_count() or 1, cpus)
    _from_a_lasting_thread(raympi.init_ray, address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
                           logging_level=logging.WARNING)
    _connected = _Ray(None, ray.get_runtime_context().gcs_address, cpus, gpus)
    return _connected


def _from_a_lasting_thread(connect: Callable[..., Any], **kwargs) -> None:
    """`connect(**kwargs)`, from a thread that lives as long as this process: once the thread that connected to Ray
    has ended, Ray 2.60's ray.shutdown() (its exit hook's too) waits 15 s for its task event buffer. Flyte 2 runs a
    task on threads that end before the process does."""
    global _connections
    if threading.current_thread() is threading.main_thread():
        connect(**kwargs)
        return
    with _connections_lock:
        if _connections is None:
            _connections = queue.SimpleQueue()
            threading.Thread(target=_connect_when_asked, args=(_connections,), name="raympi-ray-connection",
                             daemon=True).start()
    done: Future = Future()
    _connections.put((connect, kwargs, done))
    done.result()


_connections: Optional[queue.SimpleQueue] = None
_connections_lock = threading.Lock()


def _connect_when_asked(calls: queue.SimpleQueue) -> None:
    while True:
        connect, kwargs, done = calls.get()
        try:
            done.set_result(connect(**kwargs))
        except BaseException as error:  # noqa: B036 -- the caller's, raised there
            done.set_exception(error)


def _current() -> Optional[_Ray]:
    """The Ray connected to here, if this process is still connected to it."""
    if _connected and ray.is_initialized() and ray.get_runtime_context().gcs_address == _connected.gcs_address:
        return _connected
    return None


def _leaving(current: Optional[_Ray], task_address: Optional[str], address: Optional[str], cpus: int,
             gpus: int) -> Optional[str]:
    """Why the connected Ray (`current`, or None: one this process connected to by itself) is not the one the task
    asks for; None when it is."""
    named = "the task's address" if task_address else "RAY_ADDRESS"
    if current is None:
        here = ray.get_runtime_context().gcs_address
        if task_address is None or _names(task_address, here):
            return None
        return f"leaving the Ray at {here} for {task_address} ({named})"
    if current.address is not None:
        if address and _names(address, current.gcs_address):
            return None
        target, why = (address, named) if address else ("an embedded Ray", "no address given")
        return f"leaving the Ray at {current.address} for {target} ({why})"
    if address:
        return f"leaving the embedded Ray for {address} ({named})"
    lacking = [f"{need} {kind}" for kind, has, need in (("CPUs", current.cpus, cpus), ("GPUs", current.gpus, gpus))
               if need > has]
    if not lacking:
        return None
    return (f"restarting the embedded Ray: the task needs {' and '.join(lacking)}, it has {current.cpus} CPUs "
            f"and {current.gpus} GPUs")


def _names(address: str, gcs_address: str) -> bool:
    """Whether `address`, as ray.init takes it, names the Ray whose GCS is at `gcs_address`: "auto" names the Ray
    connected to; host:port that GCS, the host by name or IP (a loopback one for any of this machine's); a Ray
    Client address (ray://host:port, the port its server's) that GCS's host."""
    if address == "auto":
        return True
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    gcs_host, _, gcs_port = gcs_address.rpartition(":")
    return (client or port == gcs_port) and bool(_ips(host) & _ips(gcs_host))


def _ips(host: str) -> Set[str]:
    """The IPs `host` resolves to; for a loopback one, every IP of this machine too."""
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}
    if any(ipaddress.ip_address(ip).is_loopback for ip in ips):
        ips |= {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}
    return ips


def _code_env() -> Optional[dict]:
    """The entrypoint's working directory as the job's working_dir, unless the Ray job has one already."""
    if job_runtime_env().get("working_dir"):
        return None
    return {"working_dir": os.getcwd(), "excludes": ["fast*.tar.gz", "script_mode.tar.gz"]}


def _wait_for(reservation, config: RayMPIJob, bundles: int, resource: str, per_bundle: int) -> None:
    nodes = nodes_offering(resource, per_bundle)
    spread = (f"; each of the {bundles} workers needs a Ray node of its own with {per_bundle} {resource}s, and the "
              f"cluster has {nodes}" if bundles > nodes else "")
    if spread:
        logger.warning(f"RayMPIJob: waiting up to placement_timeout_seconds={config.placement_timeout_seconds} for "
                       f"Ray to reserve the world's slots{spread} (an autoscaler may add nodes)")
    try:
        ray.get(reservation.ready(), timeout=config.placement_timeout_seconds)
    except GetTimeoutError:
        raise TimeoutError(
            f"Ray could not reserve {config.workers} worker(s) x {config.slots} slots within "
            f"placement_timeout_seconds={config.placement_timeout_seconds}{spread}: the cluster has "
            f"{ray.cluster_resources()} in all"
        ) from None
