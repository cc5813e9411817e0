"""The contract between telemetry collection (ingest) and its consumers (Prometheus
exposition, topology, SLOs, dashboard).

Collection turns what the sidecars report into :class:`EdgeSample` values: cumulative
counters per *edge* (source workload -> destination service/subset, by response code)
at a point in time. A :class:`MetricsStore` keeps a bounded history of them so consumers
can ask for rates and latency quantiles over a window (SLO burn rates need 5 m .. 6 h).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# Latency histogram bucket upper bounds, milliseconds (Istio's defaults).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)


class Reporter(StrEnum):
    """Which side counted (Istio's ``reporter`` label)."""

    SOURCE = "source"  # the caller's sidecar (or gateway): final status after retries
    DESTINATION = "destination"  # the callee's sidecar: also sees callers outside the mesh


class Security(StrEnum):
    """Istio's ``connection_security_policy`` of an edge's requests."""

    MUTUAL_TLS = "mutual_tls"
    NONE = "none"
    # the request never reached the destination (an injected abort, a local rate limit,
    # no healthy upstream): it says nothing about the edge's transport security
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Edge:
    """Who called whom, as one side counted it. ``source_*`` is empty for traffic from
    outside the mesh (and, reported by the destination, for callers without a mesh
    identity)."""

    source_workload: str
    source_namespace: str
    source_service: str  # canonical service of the caller ("" if unknown)
    destination_service: str  # FQDN: reviews.default.svc.cluster.local
    destination_namespace: str
    destination_subset: str = ""  # "" = no subset
    destination_port: int = 0
    protocol: str = "http"  # http | grpc | tcp
    security: Security = Security.NONE
    reporter: Reporter = Reporter.SOURCE

    @property
    def mtls(self) -> bool:
        return self.security is Security.MUTUAL_TLS

    @property
    def counted(self) -> bool:
        """Does this edge count towards the mesh's totals (topology, golden signals,
        SLOs)? Every request is counted once: by its source, or — when the caller has no
        mesh identity (outside the mesh, a plaintext client) — by its destination."""
        return self.reporter is Reporter.SOURCE or not self.source_workload


@dataclass(frozen=True)
class EdgeSample:
    """Cumulative counters of one edge, as one proxy (``node``) reported them at ``at``
    (unix seconds).

    Counters only grow while the reporting proxy's agent lives (it carries them across
    restarts of its Envoy); a new agent (a new ``incarnation``) starts again from zero, and
    the stores handle that like Prometheus' rate(). A store keeps one series per
    (edge, node): several proxies may report the same edge (replicas of a destination).
    """

    edge: Edge
    at: float
    requests_by_code: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    # cumulative counts per LATENCY_BUCKETS_MS bound, then optionally the +Inf count: the
    # histogram's own total (proxies' histograms lag their request counters by up to one
    # reading); without it the total of requests_by_code is the +Inf bucket
    latency_buckets: tuple[int, ...] = ()
    latency_sum_ms: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0
    tcp_connections_opened: int = 0
    tcp_connections_closed: int = 0
    tcp_sent_bytes: int = 0
    tcp_received_bytes: int = 0
    node: str = ""  # node id of the proxy that reported it
    incarnation: str = ""  # which run of that proxy's agent (counters restart with it)
    # when that run's counters started (unix seconds, the control plane's clock: the time
    # of the report minus the agent's uptime); None: unknown (an older agent)
    since: float | None = None


@dataclass(frozen=True)
class EdgeRates:
    """An edge's traffic over a window: what the topology graph and dashboard show."""

    edge: Edge
    window_seconds: float
    requests: float  # count in the window
    rps: float
    errors: float  # 5xx count in the window
    error_ratio: float  # errors / requests (0 when no requests)
    by_code_class: dict[str, float]  # "2xx" -> count
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    request_bytes: float = 0.0
    response_bytes: float = 0.0
    tcp_connections: float = 0.0


class MetricsStore(Protocol):
    def add(self, samples: Sequence[EdgeSample]) -> None: ...

    def edges(self) -> list[Edge]: ...

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        """Per edge, what happened in the last ``window_seconds``."""
        ...

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        """(good, total) requests to a service in the window: good = non-5xx, or, with a
        latency threshold, faster than it. The SLI of availability and latency SLOs."""
        ...


def edge_rates_from_dict(d: dict[str, Any]) -> EdgeRates:
    """The inverse of ``dataclasses.asdict(EdgeRates)`` (rates read from another cluster)."""
    fields = dict(d)
    e = dict(fields.pop("edge"))
    if "mtls" in e:  # a control plane of before connection_security_policy
        e["security"] = Security.MUTUAL_TLS if e.pop("mtls") else Security.NONE
    e["security"] = Security(e.get("security", Security.NONE))
    e["reporter"] = Reporter(e.get("reporter", Reporter.SOURCE))
    edge = Edge(**e)
    return EdgeRates(edge=edge, **fields)
