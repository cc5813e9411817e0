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

from shoal.api.gateway import GATEWAY_ANNOTATION, PORTS_ANNOTATION, GatewaySpec, TlsMode
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
    """The port of the first AUTO_PASSTHROUGH server of a Gateway that selects
    ``workload`` (a gateway workload that may bind that port), else None."""
    if GATEWAY_ANNOTATION not in workload.metadata.annotations:
        return None
    text = workload.metadata.annotations.get(PORTS_ANNOTATION, "")
    allowed = {int(p) for p in text.split(",") if p.strip().isdigit()}
    labels = workload.spec.labels
    ports = []
    for gw in gateways:
        spec: GatewaySpec = gw.spec
        if not all(labels.get(k) == v for k, v in spec.selector.items()):
            continue
        ports += [s.port.number for s in spec.servers
                  if s.mode is TlsMode.AUTO_PASSTHROUGH and s.port.number in allowed]
    return min(ports) if ports else None


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
