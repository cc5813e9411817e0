"""Endpoints across networks: other networks are reached through their east-west gateway.

Multi-cluster with non-flat networks (Istio's "split horizon EDS"): a proxy on network N
cannot reach an endpoint on network M directly. For such a proxy, each locality group's
endpoints on M are replaced by M's east-west gateways (address : AUTO_PASSTHROUGH port),
each weighted by the weight of the endpoints it stands for (shared among M's gateways).
The client sidecar still speaks mTLS with the endpoint's SNI
(``outbound_.<port>_.<subset>_.<fqdn>``); the gateway routes by that SNI to its own
network's endpoints without terminating TLS. Endpoints keep their locality, so locality
load balancing keeps traffic local and fails over to the other network.

* An endpoint or proxy without a network, or on the same network, is reached directly.
* Endpoints on a network without an east-west gateway are dropped (unreachable), and so
  are cross-network endpoints that do not speak mesh mTLS (the gateway needs the SNI).
* An east-west gateway itself only forwards to its own network (no gateway-to-gateway
  hops): cross-network endpoints are dropped for it.

East-west gateways: gateway workloads selected by a Gateway with an AUTO_PASSTHROUGH
server (ours), or marked by the remote-cluster view (theirs, see
:mod:`shoal.multicluster.labels`). Pure functions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shoal.api.meta import Resource
from shoal.multicluster.labels import (
    CLUSTER_LABEL,
    EAST_WEST_ANNOTATION,
    NETWORK_LABEL,
    REMOTE_ANNOTATION,
    cluster_of,
    east_west_port,
    network_of,
    same_network,
)
from shoal.registry.snapshot import Endpoint, MeshSnapshot


@dataclass(frozen=True)
class NetworkGateway:
    """One east-west gateway: where other networks' proxies reach ``network``."""

    network: str
    cluster: str
    address: str
    port: int
    workload: str
    namespace: str


@dataclass(frozen=True)
class GatewayEndpoint(Endpoint):
    """An endpoint standing for endpoints on another network: always mesh mTLS (the
    gateway routes by the SNI only a sidecar's mTLS carries)."""


Gateways = Mapping[str, tuple[NetworkGateway, ...]]


def gateway_port(mesh: MeshSnapshot, workload: Resource) -> int | None:
    """The AUTO_PASSTHROUGH port of an east-west gateway workload, else None."""
    annotations = workload.metadata.annotations
    if REMOTE_ANNOTATION in annotations:  # marked by its own cluster's Gateways
        text = annotations.get(EAST_WEST_ANNOTATION, "")
        return int(text) if text.isdigit() else None
    return east_west_port(workload, mesh.of_kind("Gateway"))


def east_west_gateways(mesh: MeshSnapshot) -> dict[str, tuple[NetworkGateway, ...]]:
    """network -> its east-west gateways (sorted by cluster, address)."""
    out: dict[str, list[NetworkGateway]] = defaultdict(list)
    for wl in mesh.workloads:
        port = gateway_port(mesh, wl)
        network = network_of(wl.spec.labels) or (
            mesh.config.network if REMOTE_ANNOTATION not in wl.metadata.annotations else "")
        if port is None or not network:
            continue
        out[network].append(NetworkGateway(
            network, cluster_of(wl.spec.labels), wl.spec.address, port,
            wl.metadata.name, wl.metadata.namespace))
    return {n: tuple(sorted(g, key=lambda x: (x.cluster, x.address, x.port)))
            for n, g in sorted(out.items())}


def proxy_network(mesh: MeshSnapshot, workload: Resource | None) -> str:
    """The network a proxy is on: its workload's label, else this control plane's."""
    if workload is not None and (n := network_of(workload.spec.labels)):
        return n
    return mesh.config.network


def reachable(endpoints: Iterable[Endpoint], network: str, gateways: Gateways,
              mtls: Callable[[Endpoint], bool], *, east_west: bool = False
              ) -> list[Endpoint]:
    """``endpoints`` as a proxy on ``network`` reaches them (see the module doc);
    ``east_west``: the proxy is an east-west gateway (its own network only)."""
    eps = list(endpoints)
    if not network:
        return eps
    out: list[Endpoint] = []
    behind: dict[tuple[str, str], int] = defaultdict(int)  # (locality, network) -> weight
    for ep in eps:
        other = network_of(dict(ep.labels))
        if same_network(network, other):
            out.append(ep)
        elif not east_west and mtls(ep):
            behind[(ep.locality, other)] += ep.weight
    for (locality, other), weight in sorted(behind.items()):
        gws = gateways.get(other, ())
        for gw in gws:
            out.append(GatewayEndpoint(
                workload=gw.workload, namespace=gw.namespace, address=gw.address,
                port=gw.port, labels=tuple(sorted({CLUSTER_LABEL: gw.cluster,
                                                   NETWORK_LABEL: other}.items())),
                locality=locality, weight=max(1, math.ceil(weight / len(gws))),
                service_account="", sidecar=True))
    return out
