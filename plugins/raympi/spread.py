"""Spreading an MPI world over the nodes of a Ray placement group."""

from typing import TYPE_CHECKING, Dict, Optional

from .channel import new_key
from .ray_internals import WORKER_NICENESS, bundle_nodes, node_addresses

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


def placement(group: "PlacementGroup", ranks_per_bundle: int, runtime_env: Optional[dict] = None) -> Dict:
    """The `mpi` runtime env fields that put `ranks_per_bundle` ranks on the node of each bundle of the (ready)
    `group`: `hosts` ("ip:ranks", bundle 0's node first: schedule the task in bundle 0, it is rank 0) and, for a
    world on several nodes, the daemon launchers that start its ranks on the other nodes (`launchers`, `launch_key`).

    Those are raympi.daemon_launcher actors, one in the first bundle of each other node, holding that bundle's GPUs
    (its ranks see them) and no CPU, with `runtime_env` (rank 0's, without `mpi`: what its ranks need there). They
    end when the group is removed."""
    import ray

    ips = node_addresses()
    ranks: Dict[str, int] = {}
    first_bundle: Dict[str, int] = {}
    for index, node in sorted(bundle_nodes(group).items()):
        ranks[ips[node]] = ranks.get(ips[node], 0) + ranks_per_bundle
        first_bundle.setdefault(ips[node], index)
    hosts = [f"{ip}:{n}" for ip, n in ranks.items()]
    if len(hosts) == 1:
        return {"hosts": hosts}
    key = new_key()
    others = list(first_bundle.items())[1:]
    addresses = ray.get([_launcher(group, index, runtime_env).remote(key, ip).address.remote() for ip, index in others])
    return {"hosts": hosts, "launchers": {ip: port for ip, port in addresses}, "launch_key": key.hex()}


def _launcher(group: "PlacementGroup", bundle: int, runtime_env: Optional[dict]):
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from .daemon_launcher import DaemonLauncher

    env = {name: value for name, value in (runtime_env or {}).items() if name != "mpi"}
    # Ranks run at the niceness of their daemon, a child of this Ray worker: that of rank 0 (see RANK_ENV).
    env["env_vars"] = {**env.get("env_vars", {}), WORKER_NICENESS: "0"}
    return DaemonLauncher.options(
        num_gpus=group.bundle_specs[bundle].get("GPU", 0),
        lifetime="detached",  # kept without a handle: it ends with the group (or the job that owns the group)
        scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle),
        runtime_env=env,
    )
