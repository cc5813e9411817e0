"""The proxies' stats reports -> per-edge counters -> :class:`EdgeSample`.

Each proxy's agent reports the cumulative per-edge counters its Envoy keeps
(:mod:`shoal.telemetry.report`, docs/adr/0027). :class:`ProxyCounters` keeps the latest
rows of every proxy (node), turns them into :class:`Edge` values — source side
(``reporter=source``: the caller's sidecar or gateway, final status after retries) and
destination side (``reporter=destination``: the callee's sidecar, which also sees callers
from outside the mesh) — and hands the metrics store a fresh sample of each touched
(edge, node). Prometheus' ``/metrics`` exposes the same rows with Istio's names.

Labels come only from bounded sources: the reporting node (authenticated), its
Envoy's cluster names, codes, flags, gRPC status and the verified peer identity.

Series are bounded (docs/adr/0025): a node keeps at most :data:`MAX_SERIES_PER_NODE`
rows, all nodes together :data:`MAX_SERIES`; a row that would create one more is not
kept: counted per node in ``dropped`` (at most :data:`MAX_DROP_REPORTERS` nodes by name,
the rest as ``other``), the first drop of each node logged as a warning. A node that has
not reported for :data:`NODE_IDLE_SECONDS` is forgotten (its history stays in the store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shoal.ca.spiffe import SpiffeId
from shoal.errors import ShoalError
from shoal.telemetry.model import (
    LATENCY_BUCKETS_MS,
    Edge,
    EdgeSample,
    Reporter,
    Security,
)
from shoal.telemetry.names import Identity, parse_outbound_cluster
from shoal.telemetry.report import HttpRow, StatsReport, TcpRow

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
MAX_SERIES_PER_NODE = 1_000
MAX_SERIES = 10_000
MAX_DROP_REPORTERS = 100  # nodes named in the drop counter; the rest are "other"
OTHER = "other"
NODE_IDLE_SECONDS = 15 * 60.0
# Response flags of a request that never reached the destination (no upstream
# connection was used): it says nothing about the edge's transport security.
LOCAL_FLAGS = frozenset({"FI", "RL", "RLSE", "UAEX", "NR", "NC", "UH", "UO", "UF", "DPE",
                         "IH"})


def security_of(row: HttpRow | TcpRow) -> Security:
    if row.peer:
        return Security.MUTUAL_TLS
    if row.reporter is Reporter.SOURCE:
        flags = set(row.flags.split(","))
        if flags & LOCAL_FLAGS or (isinstance(row, HttpRow) and row.code == 0):
            return Security.UNKNOWN
    return Security.NONE


def _peer(uri: str) -> SpiffeId | None:
    if not uri:
        return None
    try:
        return SpiffeId.parse(uri)
    except (ShoalError, ValueError):
        return None


def _inbound_port_name(cluster: str) -> str:
    parts = cluster.split("|")  # inbound|<app port>|<port name> (xds.generate.names)
    return parts[2] if len(parts) == 3 and parts[0] == "inbound" else ""


# (namespace, service, port name) -> the service's port number, None if unknown
ServicePorts = Callable[[str, str, str], int | None]


def _no_ports(namespace: str, service: str, port_name: str) -> int | None:
    return None


@dataclass
class Node:
    """One proxy's latest report."""

    identity: Identity
    incarnation: str
    seen: float
    since: float | None = None  # when its counters started (our clock), None unknown
    principal: str = ""  # the SPIFFE ID it authenticated with ("" unknown)
    http: dict[tuple[object, ...], HttpRow] = field(default_factory=dict)
    tcp: dict[tuple[object, ...], TcpRow] = field(default_factory=dict)
    edges: dict[tuple[object, ...], Edge] = field(default_factory=dict)  # row key -> edge

    @property
    def series(self) -> int:
        return len(self.http) + len(self.tcp)


def _http_key(r: HttpRow) -> tuple[object, ...]:
    return (r.reporter, r.cluster, r.code, r.flags, r.peer, r.grpc)


def _tcp_key(r: TcpRow) -> tuple[object, ...]:
    return (r.reporter, r.cluster, r.flags, r.peer)


@dataclass
class _Sum:
    codes: dict[int, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0
    connections: int = 0
    sent: int = 0
    received: int = 0

    def add_http(self, row: HttpRow) -> None:
        self.codes[row.code] = self.codes.get(row.code, 0) + row.requests
        self.buckets = [a + b for a, b in zip(self.buckets, row.duration_buckets, strict=True)]
        self.latency_sum_ms += row.duration_sum_ms
        self.request_bytes += row.request_bytes
        self.response_bytes += row.response_bytes

    def add_tcp(self, row: TcpRow) -> None:
        self.connections += row.connections
        self.sent += row.sent_bytes
        self.received += row.received_bytes

    def sample(self, edge: Edge, at: float, node: Node) -> EdgeSample:
        return EdgeSample(
            edge=edge, at=at, requests_by_code=self.codes,
            latency_buckets=tuple(self.buckets) if self.codes else (),
            latency_sum_ms=self.latency_sum_ms, request_bytes=self.request_bytes,
            response_bytes=self.response_bytes, tcp_connections_opened=self.connections,
            tcp_connections_closed=self.connections, tcp_sent_bytes=self.sent,
            tcp_received_bytes=self.received, node=node.identity.node_id,
            incarnation=node.incarnation, since=node.since)


class ProxyCounters:
    """Every proxy's latest per-edge counters (see the module docstring)."""

    def __init__(self, *, domain: str = "cluster.local", clock: Callable[[], float] = time.time,
                 per_node: int = MAX_SERIES_PER_NODE, max_series: int = MAX_SERIES,
                 service_ports: ServicePorts = _no_ports) -> None:
        self._service_ports = service_ports
        self.nodes: dict[str, Node] = {}
        self.dropped: dict[str, int] = {}  # node -> rows not kept (bounded)
        self.reports = 0
        self._domain = domain
        self._clock = clock
        self._per_node = per_node
        self._max_series = max_series
        self._series = 0

    @property
    def series(self) -> int:
        return self._series

    # -- edges -----------------------------------------------------------------------------
    def edge(self, node: Node, row: HttpRow | TcpRow) -> Edge:
        me = node.identity
        protocol = "tcp" if isinstance(row, TcpRow) else "grpc" if row.grpc else "http"
        security = security_of(row)
        if row.reporter is Reporter.SOURCE:
            target = parse_outbound_cluster(row.cluster)
            return Edge(
                source_workload=me.workload, source_namespace=me.namespace,
                source_service=me.service,
                destination_service=target.fqdn if target else (row.cluster or UNKNOWN),
                destination_namespace=target.namespace if target else "",
                destination_subset=target.subset if target else "",
                destination_port=target.port if target else 0,
                protocol=protocol, security=security, reporter=Reporter.SOURCE)
        peer = _peer(row.peer)
        service = me.service or me.workload
        return Edge(
            source_workload=peer.service_account if peer else "",
            source_namespace=peer.namespace if peer else "",
            source_service=peer.service_account if peer else "",
            destination_service=f"{service}.{me.namespace}.svc.{self._domain}",
            destination_namespace=me.namespace,
            # the service's port, not the app's (a local port that changes with restarts)
            destination_port=self._service_ports(
                me.namespace, service, _inbound_port_name(row.cluster)) or 0,
            protocol=protocol, security=security, reporter=Reporter.DESTINATION)

    # -- intake ----------------------------------------------------------------------------
    def _admit(self, node: Node) -> bool:
        if node.series < self._per_node and self._series < self._max_series:
            self._series += 1
            return True
        name = node.identity.node_id
        name = name if name in self.dropped or len(self.dropped) < MAX_DROP_REPORTERS \
            else OTHER
        if name not in self.dropped:
            log.warning("telemetry series limit reached: rows that would create new series "
                        "are dropped (counted in shoal_telemetry_dropped_series)",
                        extra={"reporter": name, "series": node.series,
                               "per_reporter": self._per_node, "total": self._series,
                               "max_series": self._max_series})
        self.dropped[name] = self.dropped.get(name, 0) + 1
        return False

    def _forget(self, node_id: str) -> None:
        old = self.nodes.pop(node_id, None)
        if old is not None:
            self._series -= old.series

    def expire(self) -> None:
        """Forget nodes that have not reported for NODE_IDLE_SECONDS."""
        cutoff = self._clock() - NODE_IDLE_SECONDS
        for node_id in [n for n, s in self.nodes.items() if s.seen < cutoff]:
            self._forget(node_id)

    def apply(self, report: StatsReport, principal: str = ""
              ) -> tuple[list[EdgeSample], bool]:
        """Take one node's report (its sender already authenticated as that node, with
        SPIFFE ID ``principal`` when known).
        Returns fresh samples of the (edge, node) pairs it touched, and whether the
        control plane wants every row next time (it did not know this incarnation)."""
        now = self._clock()
        self.expire()
        self.reports += 1
        node = self.nodes.get(report.node)
        if node is None or node.incarnation != report.incarnation:
            self._forget(report.node)
            if not report.full:
                # an incarnation this control plane does not know (it restarted): the
                # report has only the rows that changed, maybe some of an edge's, and a
                # sample of that edge would jump when the rest arrive. Keep nothing, ask
                # for every row: the next report carries them, cumulative.
                return [], True
            node = Node(Identity.from_node(report.node, report.service),
                        report.incarnation, now,
                        None if report.uptime is None else now - report.uptime)
            self.nodes[report.node] = node
        node.seen = now
        node.principal = principal
        touched: set[Edge] = set()
        for row in report.http:
            key = _http_key(row)
            if key not in node.http:
                if not self._admit(node):
                    continue
                node.edges[key] = self.edge(node, row)
            node.http[key] = row
            touched.add(node.edges[key])
        for trow in report.tcp:
            tkey = _tcp_key(trow)
            if tkey not in node.tcp:
                if not self._admit(node):
                    continue
                node.edges[tkey] = self.edge(node, trow)
            node.tcp[tkey] = trow
            touched.add(node.edges[tkey])
        return self.samples(node, touched, now), False

    def samples(self, node: Node, edges: set[Edge], at: float) -> list[EdgeSample]:
        """The node's rows of each of ``edges``, summed per edge (several rows map to one
        edge: one per code, flags, gRPC status)."""
        sums = {e: _Sum() for e in edges}
        for key, row in node.http.items():
            if (s := sums.get(node.edges[key])) is not None:
                s.add_http(row)
        for tkey, trow in node.tcp.items():
            if (s := sums.get(node.edges[tkey])) is not None:
                s.add_tcp(trow)
        return [s.sample(e, at, node) for e, s in sums.items()]

    def rows(self) -> Iterator[tuple[Node, Edge, HttpRow | TcpRow]]:
        """Every kept row, with its node and edge."""
        for node in self.nodes.values():
            yield from ((node, node.edges[k], r) for k, r in node.http.items())
            yield from ((node, node.edges[k], t) for k, t in node.tcp.items())
