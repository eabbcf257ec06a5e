"""Spreading an MPI world over the nodes of a Ray placement group, and waiting for a call in such a world."""

import secrets
import time
from typing import TYPE_CHECKING, Dict, Optional

from .channel import new_key
from .errors import MPIWorldStartError
from .ray_internals import WORKER_NICENESS, bundle_nodes, node_addresses, require_tested_ray

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.util.placement_group import PlacementGroup

# How long a call may take to end by itself once a daemon of its world failed (a world that ran: rank 0 reports the
# ranks it lost) before it is taken for a world that never started, and cancelled.
DAEMON_FAILURE_GRACE_S = 5.0
_NAMESPACE = "raympi"


def placement(group: "PlacementGroup", ranks_per_bundle: int, runtime_env: Optional[dict] = None) -> Dict:
    """The `mpi` runtime env fields that put `ranks_per_bundle` ranks on the node of each bundle of the (ready)
    `group`: `hosts` ("ip:ranks", bundle 0's node first: schedule the task in bundle 0, it is rank 0) and, for a
    world on several nodes, the daemon launchers that start its ranks on the other nodes (`launchers`: their ports)
    and the world's id (`world`).

    Those are raympi.daemon_launcher actors, one in the first bundle of each other node, holding that bundle's GPUs
    (its ranks see them) and no CPU, with `runtime_env` (rank 0's, without `mpi`: what its ranks need there), and
    on rank 0's node a raympi.world_key server. They end when the group is removed. The key that the launchers ask
    for is handed to them and to the key server in calls, never in a runtime env. Raises for a Ray outside the tested
    range."""
    import ray

    require_tested_ray()

    ips = node_addresses()
    ranks: Dict[str, int] = {}
    first_bundle: Dict[str, int] = {}
    for index, node in sorted(bundle_nodes(group).items()):
        ranks[ips[node]] = ranks.get(ips[node], 0) + ranks_per_bundle
        first_bundle.setdefault(ips[node], index)
    hosts = [f"{ip}:{n}" for ip, n in ranks.items()]
    if len(hosts) == 1:
        return {"hosts": hosts}
    key, world = new_key(), secrets.token_hex(16)
    (_, rank0_bundle), *others = first_bundle.items()
    launchers = [_launcher(group, index, runtime_env, _launcher_name(world, ip)).remote(ip) for ip, index in others]
    addresses = ray.get([launcher.listen.remote(key) for launcher in launchers])
    ray.get(_key_server(group, rank0_bundle).keep.remote(world, key))
    return {"hosts": hosts, "launchers": {ip: port for ip, port in addresses}, "world": world}


def get(ref: "ObjectRef", mpi: Dict, timeout: Optional[float] = None):
    """`ray.get(ref, timeout=timeout)` for a call in the world of `mpi` (a runtime_env["mpi"] with placement()'s
    fields). Where a daemon of that world fails on another node before its rank 0 runs, Ray would start the worker
    again and again until its registration timeout: this cancels the call and raises MPIWorldStartError saying why.
    The daemon failures told are those since the last `get` in the same world returned: wait for its calls in turn."""
    import ray
    from ray.exceptions import RayActorError

    deadline = None if timeout is None else time.monotonic() + timeout
    launchers = _launchers(mpi)
    polls = [launcher.failure.remote() for launcher in launchers]
    try:
        failures = list(polls)
        while failures:
            ready, failures = ray.wait([ref, *failures], num_returns=1, timeout=_left(deadline))
            if not ready or ready[0] == ref:
                break
            failures.remove(ref)
            try:
                why = ray.get(ready[0])
            except RayActorError:  # its node lost (rank 0 reports that) or its group removed
                continue
            grace = DAEMON_FAILURE_GRACE_S if deadline is None else min(DAEMON_FAILURE_GRACE_S, _left(deadline))
            if not ray.wait([ref], timeout=grace)[0]:
                ray.cancel(ref)
                raise MPIWorldStartError(f"the MPI world could not start: {why}")
            break
        return ray.get(ref, timeout=_left(deadline))
    finally:
        for poll in polls:
            ray.cancel(poll)
        for launcher in launchers:
            launcher.settle.remote()


def _launchers(mpi: Dict) -> list:
    """The daemon launchers of `mpi`'s world that are still there (a removed group's are not: the call fails in its
    runtime env's setup, saying so)."""
    import ray

    found = []
    for ip in mpi.get("launchers", {}):
        try:
            found.append(ray.get_actor(_launcher_name(mpi["world"], ip), namespace=_NAMESPACE))
        except ValueError:
            pass
    return found


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _launcher_name(world: str, ip: str) -> str:
    return f"launcher-{world}-{ip}"


def _launcher(group: "PlacementGroup", bundle: int, runtime_env: Optional[dict], name: str):
    from .daemon_launcher import DaemonLauncher

    env = {name: value for name, value in (runtime_env or {}).items() if name != "mpi"}
    # Ranks run at the niceness of their daemon, a child of this Ray worker: that of rank 0 (see RANK_ENV).
    env["env_vars"] = {**env.get("env_vars", {}), WORKER_NICENESS: "0"}
    return DaemonLauncher.options(name=name, namespace=_NAMESPACE, num_gpus=group.bundle_specs[bundle].get("GPU", 0),
                                  runtime_env=env, **_in_bundle(group, bundle))


def _key_server(group: "PlacementGroup", bundle: int):
    import ray

    from .world_key import KeyServer

    return ray.remote(num_cpus=0, max_restarts=0)(KeyServer).options(**_in_bundle(group, bundle)).remote()


def _in_bundle(group: "PlacementGroup", bundle: int) -> dict:
    """An actor's options that keep it in `bundle` of `group` without a handle, until the group is removed (or the
    job that owns the group ends)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"lifetime": "detached",
            "scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle)}
