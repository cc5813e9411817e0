"""The live service graph: who calls whom, how much, how well, whether over mTLS.

Built from :meth:`MetricsStore.rates` (one :class:`EdgeRates` per source workload ->
destination service/subset/port). Nodes are services (plus ``external`` for traffic
from outside the mesh); an edge aggregates every workload-level edge between two
services. Golden signals of a node are those of its *inbound* traffic.

Quantiles cannot be summed: an aggregate's p99 is the largest p99 of its parts (an
upper bound) and its p50 the request-weighted mean of their p50s (an estimate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.telemetry.model import EdgeRates, Security

EXTERNAL = "external"


def short_name(fqdn: str) -> tuple[str, str]:
    """reviews.default.svc.cluster.local -> ("reviews", "default")."""
    parts = fqdn.split(".")
    return parts[0], parts[1] if len(parts) > 1 else ""


@dataclass
class Signals:
    """Golden signals of some traffic: rate, errors, latency (requests in the window)."""

    window_seconds: float
    requests: float = 0.0
    errors: float = 0.0
    _p50_weighted: float = 0.0
    _p50_weight: float = 0.0
    p99_ms: float | None = None

    def add(self, r: EdgeRates) -> None:
        self.requests += r.requests
        self.errors += r.errors
        if r.requests and r.p50_ms is not None:
            self._p50_weighted += r.p50_ms * r.requests
            self._p50_weight += r.requests
        if r.requests and r.p99_ms is not None:
            self.p99_ms = max(self.p99_ms or 0.0, r.p99_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.window_seconds if self.window_seconds else 0.0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float | None:
        return self._p50_weighted / self._p50_weight if self._p50_weight else None

    def to_dict(self) -> dict[str, Any]:
        return {"requests": round(self.requests, 3), "rps": round(self.rps, 3),
                "errors": round(self.errors, 3), "errorRatio": round(self.error_ratio, 5),
                "p50Ms": _round(self.p50_ms), "p99Ms": _round(self.p99_ms)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


@dataclass
class Node:
    id: str
    name: str
    namespace: str
    kind: str  # "service" | "external"
    signals: Signals
    workloads: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    clusters: set[str] = field(default_factory=set)  # multi-cluster: where it has instances

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "namespace": self.namespace,
                "kind": self.kind, "workloads": sorted(self.workloads),
                "versions": sorted(self.versions), "clusters": sorted(self.clusters),
                **self.signals.to_dict()}


@dataclass
class Link:
    source: str
    target: str
    protocol: str
    signals: Signals
    mtls_requests: float = 0.0
    plain_requests: float = 0.0
    flags: set[bool] = field(default_factory=set)  # Edge.mtls of every part
    subsets: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # multi-cluster: the caller runs in a cluster where the callee has no instance, so
    # those calls cross clusters (through an east-west gateway on split networks)
    cross_cluster: bool = False

    @property
    def mtls(self) -> str:
        """"full" when every request was mutual TLS, "none" when none, else "partial"."""
        if self.mtls_requests == self.plain_requests == 0:  # idle: what the parts say
            return "full" if self.flags == {True} else "partial" if True in self.flags \
                else "none"
        if self.plain_requests == 0:
            return "full"
        return "partial" if self.mtls_requests > 0 else "none"

    def to_dict(self) -> dict[str, Any]:
        w = self.signals.window_seconds or 1.0
        return {"source": self.source, "target": self.target, "protocol": self.protocol,
                "mtls": self.mtls, "crossCluster": self.cross_cluster,
                **self.signals.to_dict(),
                "subsets": {k: round(v / w, 3) for k, v in sorted(self.subsets.items())}}


@dataclass
class Topology:
    window_seconds: float
    nodes: dict[str, Node]
    links: dict[tuple[str, str], Link]

    def to_dict(self) -> dict[str, Any]:
        return {"windowSeconds": self.window_seconds,
                "nodes": [n.to_dict() for n in sorted(self.nodes.values(), key=_node_order)],
                "edges": [e.to_dict() for _, e in sorted(self.links.items())]}


def _node_order(n: Node) -> tuple[int, str]:
    return (0 if n.kind == EXTERNAL else 1, n.id)


def _source_fqdn(service: str, namespace: str, known: dict[tuple[str, str], str]) -> str:
    """Callers are reported by canonical (short) service name; nodes are FQDNs, so that
    a service that both calls and is called is one node."""
    if not service:
        return EXTERNAL
    if "." in service:
        return service
    ns = namespace or "default"
    return known.get((service, ns), f"{service}.{ns}.svc.cluster.local")


def build_topology(rates: Sequence[EdgeRates], window_seconds: float, *,
                   services: Iterable[str] = (),
                   clusters: Mapping[str, Iterable[str]] | None = None) -> Topology:
    """The graph of ``rates``; ``services`` (FQDNs) become nodes even without traffic.
    ``clusters``: FQDN -> the clusters it has instances in (multi-cluster)."""
    nodes: dict[str, Node] = {}
    links: dict[tuple[str, str], Link] = {}

    def node(fqdn: str) -> Node:
        if fqdn not in nodes:
            if fqdn == EXTERNAL:
                nodes[fqdn] = Node(fqdn, EXTERNAL, "", EXTERNAL, Signals(window_seconds))
            else:
                name, ns = short_name(fqdn)
                nodes[fqdn] = Node(fqdn, name, ns, "service", Signals(window_seconds))
        return nodes[fqdn]

    for fqdn in services:
        node(fqdn)
    by_short = {short_name(f): f for f in nodes if f != EXTERNAL}
    for r in rates:
        e = r.edge
        if not e.counted:  # the source's sidecar reported these requests already
            continue
        src = node(_source_fqdn(e.source_service, e.source_namespace, by_short))
        if e.source_workload and src.kind != EXTERNAL:
            src.workloads.add(e.source_workload)
        dst = node(e.destination_service)
        if e.destination_subset:
            dst.versions.add(e.destination_subset)
        dst.signals.add(r)
        key = (src.id, dst.id)
        link = links.get(key)
        if link is None:
            link = links[key] = Link(src.id, dst.id, e.protocol, Signals(window_seconds))
        link.signals.add(r)
        if e.security is not Security.UNKNOWN:  # requests that never left the client
            link.flags.add(e.mtls)             # say nothing about the edge's security
            if e.mtls:
                link.mtls_requests += r.requests
            else:
                link.plain_requests += r.requests
        link.subsets[e.destination_subset or "-"] += r.requests
    for fqdn, where in (clusters or {}).items():
        if fqdn in nodes:
            nodes[fqdn].clusters.update(where)
    for link in links.values():
        src, dst = nodes[link.source].clusters, nodes[link.target].clusters
        link.cross_cluster = bool(src and dst and src - dst)
    return Topology(window_seconds, nodes, links)


def service_signals(rates: Sequence[EdgeRates], fqdn: str, window_seconds: float) -> Signals:
    """Golden signals of the traffic into one service."""
    s = Signals(window_seconds)
    for r in rates:
        if r.edge.destination_service == fqdn and r.edge.counted:
            s.add(r)
    return s
