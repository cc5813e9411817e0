"""Cluster and network of a workload, and how a control plane sees workloads.

A control plane started with ``--cluster``/``--network`` adds Istio's topology labels to
the workloads it serves (without storing them: only the mesh view it generates from has
them), and a workload without a locality gets its cluster's name as its region, so
locality load balancing keeps traffic in the caller's cluster. Workloads of a remote
cluster are seen under a cluster-qualified name (``<name>.<cluster>``) so they never
collide with local ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shoal.api.gateway import auto_passthrough_ports
from shoal.api.meta import Resource

CLUSTER_LABEL = "topology.istio.io/cluster"
NETWORK_LABEL = "topology.istio.io/network"
# Set (by the view, never stored) on a gateway workload that is its network's east-west
# gateway: the port of its AUTO_PASSTHROUGH server.
EAST_WEST_ANNOTATION = "networking.shoal.io/east-west-port"
# Set on every workload seen from a remote cluster: the cluster it came from.
REMOTE_ANNOTATION = "multicluster.shoal.io/remote-cluster"

#: The kinds a control plane imports from a remote cluster.
DISCOVERED_KINDS = ("Workload", "Service", "Gateway")


def cluster_of(labels: Mapping[str, str]) -> str:
    return labels.get(CLUSTER_LABEL, "")


def network_of(labels: Mapping[str, str]) -> str:
    return labels.get(NETWORK_LABEL, "")


def east_west_port(workload: Resource, gateways: Iterable[Resource]) -> int | None:
    """The lowest AUTO_PASSTHROUGH port of gateway ``workload``, else None."""
    ports = auto_passthrough_ports(workload, gateways)
    return ports[0] if ports else None


def same_network(a: str, b: str) -> bool:
    """Directly reachable: the same network, or either side has none (a flat mesh)."""
    return not a or not b or a == b


def with_topology(workload: Resource, cluster: str, network: str) -> Resource:
    """``workload`` with the cluster/network labels (where not set) and its cluster as
    region when it has no locality. The same object when there is nothing to add."""
    spec = workload.spec
    add = {k: v for k, v in ((CLUSTER_LABEL, cluster), (NETWORK_LABEL, network))
           if v and k not in spec.labels}
    locality = spec.locality or cluster
    if not add and locality == spec.locality:
        return workload
    new_spec = spec.model_copy(update={"labels": {**spec.labels, **add},
                                       "locality": locality})
    return workload.model_copy(update={"spec": new_spec})


def local_view(resource: Resource, cluster: str, network: str) -> Resource:
    """How this control plane sees one of its own resources."""
    if resource.kind != "Workload" or not (cluster or network):
        return resource
    return with_topology(resource, cluster, network)


def remote_view(resource: Resource, cluster: str, network: str,
                gateways: Iterable[Resource] = ()) -> Resource:
    """How this control plane sees a resource of remote ``cluster`` (on ``network``):
    workloads renamed ``<name>.<cluster>``, topology-labelled, annotated with the remote
    cluster and, for an east-west gateway, its AUTO_PASSTHROUGH port (from ``gateways``,
    the remote cluster's Gateways). Services as they are (merged by name with ours)."""
    if resource.kind != "Workload":
        return resource
    wl = with_topology(resource, cluster, network)
    annotations = {**wl.metadata.annotations, REMOTE_ANNOTATION: cluster}
    port = east_west_port(resource, gateways)
    if port is not None:
        annotations[EAST_WEST_ANNOTATION] = str(port)
    meta = wl.metadata.model_copy(update={"name": f"{wl.metadata.name}.{cluster}",
                                          "annotations": annotations})
    return wl.model_copy(update={"metadata": meta})


def remote_name(name: str, cluster: str) -> str:
    return f"{name}.{cluster}"
