"""The pieces of a two-cluster mesh on one machine (``shoal up --clusters 2``, the
multi-cluster tests and ``bench/failover.py``): names, subnets, and the config each
cluster gets. No processes here (see :mod:`shoal.cli.up_clusters`)."""

from __future__ import annotations

from dataclasses import dataclass

EAST_WEST_LABEL = "istio=eastwestgateway"
EAST_WEST_NAME = "eastwest"
EAST_WEST_PORT = 15443


@dataclass(frozen=True)
class ClusterPlan:
    name: str  # the cluster (control plane --cluster)
    network: str  # its network (--network); also the bridge's shoal name (+ prefix)
    subnet: str  # the network's subnet; the bridge (host side) is its first address


def plans(prefix: str = "", base: int = 97, count: int = 2) -> list[ClusterPlan]:
    """``count`` clusters a, b, ... on networks net-a, net-b, ... (10.<base>.<i>.0/24)."""
    return [ClusterPlan(f"cluster-{c}", f"{prefix}net-{c}", f"10.{base}.{i + 1}.0/24")
            for i, c in enumerate("abcdefgh"[:count])]


def east_west_gateway(port: int = EAST_WEST_PORT) -> str:
    """The Gateway of a cluster's east-west gateway: mesh mTLS routed by SNI, passed
    through (Istio's ``cross-network-gateway``)."""
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network-gateway, namespace: default}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ["*.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
"""


def locality_failover(host: str, *, base_ejection: str = "1m", interval: str = "100ms",
                      subsets: tuple[str, ...] = ()) -> str:
    """Keep ``host``'s traffic in the caller's cluster, fail over to the others when its
    local endpoints fail (ejected after one 5xx / connect failure) and come back.

    ``base_ejection`` 1m (as in Istio's locality failover task): a dead endpoint stays
    ejected until its lease expires and the control plane removes it. When it is not
    removed (its control plane is down), each end of an ejection sends requests to it
    again until it is re-ejected: those are the requests that can fail (see
    docs/multicluster.md). ``interval`` 100ms: an ejection for consecutive errors was
    sometimes applied only at the detector's next interval (seen with 1s: a second of
    failed requests after a crash); a short interval bounds that.

    The VirtualService keeps the mesh's default retries and adds Istio's
    ``retryRemoteLocalities``: a retry skips the priority (locality) already tried, so
    while a dead local endpoint is not ejected yet its requests are retried in the other
    cluster instead of on the same dead endpoint."""
    subset_lines = ("  subsets:\n" + "".join(f"  - {{name: {v}, labels: {{version: {v}}}}}\n"
                                             for v in subsets)) if subsets else ""
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}-failover, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {{enabled: true}}
    outlierDetection: {{consecutive5xxErrors: 1, interval: {interval},
                       baseEjectionTime: {base_ejection}, maxEjectionPercent: 100}}
{subset_lines}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
    retries:
      attempts: 2
      retryOn: connect-failure,refused-stream,unavailable,cancelled,503
      retryRemoteLocalities: true
"""
