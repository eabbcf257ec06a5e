"""Spreading an MPI world over the nodes of a Ray placement group."""

from typing import TYPE_CHECKING, Dict

from .ray_internals import bundle_nodes, node_addresses

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


def placement(group: "PlacementGroup", ranks_per_bundle: int) -> Dict:
    """The `mpi` runtime env fields that put `ranks_per_bundle` ranks on the node of each bundle of the
    (ready) `group`: `hosts` ("ip:ranks", bundle 0's node first: schedule the task in bundle 0, it is
    rank 0) and the `ray_address` where the launch agent for other nodes connects."""
    import ray

    ips = node_addresses()
    ranks: Dict[str, int] = {}
    for _, node in sorted(bundle_nodes(group).items()):
        ranks[ips[node]] = ranks.get(ips[node], 0) + ranks_per_bundle
    return {"hosts": [f"{ip}:{n}" for ip, n in ranks.items()],
            "ray_address": ray.get_runtime_context().gcs_address}
