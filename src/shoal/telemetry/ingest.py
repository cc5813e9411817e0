"""Access-log entries -> exact per-edge counters -> :class:`EdgeSample`.

Only the client side (``direction == "outbound"``, Istio's ``reporter="source"``)
counts: every downstream request of a source sidecar is one entry with its final status
(after retries), response flags, duration and bytes, so counts are exact per edge and
code. See docs/adr/0008-telemetry-collection.md.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.telemetry.accesslog import Entry
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample
from shoal.telemetry.names import parse_outbound_cluster

UNKNOWN = "unknown"


@dataclass(frozen=True)
class RequestKey:
    edge: Edge
    code: int
    flags: str  # Envoy response flags, "-" when none (Istio's response_flags label)


@dataclass
class RequestCounters:
    requests: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    latency_sum_ms: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0

    def observe(self, duration_ms: float, received: int, sent: int) -> None:
        self.requests += 1
        i = bisect.bisect_left(LATENCY_BUCKETS_MS, duration_ms)
        for j in range(i, len(self.buckets)):
            self.buckets[j] += 1
        self.latency_sum_ms += duration_ms
        self.request_bytes += received
        self.response_bytes += sent


@dataclass
class TcpCounters:
    opened: int = 0
    closed: int = 0
    sent: int = 0
    received: int = 0


def edge_of(entry: Entry, protocol: str) -> Edge:
    target = parse_outbound_cluster(str(entry.get("upstream_cluster") or ""))
    return Edge(
        source_workload=str(entry.get("source_workload", "")),
        source_namespace=str(entry.get("source_namespace", "")),
        source_service=str(entry.get("source_service", "")),
        destination_service=target.fqdn if target else UNKNOWN,
        destination_namespace=target.namespace if target else "",
        destination_subset=target.subset if target else "",
        destination_port=target.port if target else 0,
        protocol=protocol,
        mtls=bool(entry.get("mtls")),
    )


def _int(v: object) -> int:
    return v if isinstance(v, int) else 0


class EdgeAggregator:
    """Cumulative counters since the control plane started, per edge (+code, flags)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.requests: dict[RequestKey, RequestCounters] = {}
        self.tcp: dict[Edge, TcpCounters] = {}
        self._reporters: dict[Edge, str] = {}
        self._clock = clock

    def add(self, entries: Iterable[Entry]) -> list[EdgeSample]:
        """Count the client-side entries; return fresh samples of the edges touched."""
        touched: set[Edge] = set()
        for e in entries:
            if e.get("direction") != "outbound":
                continue
            if e.get("kind") == "tcp":
                edge = edge_of(e, "tcp")
                t = self.tcp.setdefault(edge, TcpCounters())
                t.opened += 1
                t.closed += 1
                t.sent += _int(e.get("bytes_received"))  # what the app sent upstream
                t.received += _int(e.get("bytes_sent"))
            else:
                protocol = "grpc" if "grpc" in str(e.get("content_type", "")) else "http"
                edge = edge_of(e, protocol)
                key = RequestKey(edge, _int(e.get("status")), str(e.get("response_flags") or "-"))
                self.requests.setdefault(key, RequestCounters()).observe(
                    float(_int(e.get("duration_ms"))), _int(e.get("bytes_received")),
                    _int(e.get("bytes_sent")))
            self._reporters[edge] = str(e.get("reporter", ""))
            touched.add(edge)
        now = self._clock()
        return [self.sample(edge, now) for edge in touched]

    def sample(self, edge: Edge, at: float) -> EdgeSample:
        codes: dict[int, int] = {}
        buckets = [0] * len(LATENCY_BUCKETS_MS)
        lat_sum = 0.0
        req_b = resp_b = 0
        for key, c in self.requests.items():
            if key.edge != edge:
                continue
            codes[key.code] = codes.get(key.code, 0) + c.requests
            buckets = [a + b for a, b in zip(buckets, c.buckets, strict=True)]
            lat_sum += c.latency_sum_ms
            req_b += c.request_bytes
            resp_b += c.response_bytes
        t = self.tcp.get(edge, TcpCounters())
        return EdgeSample(
            edge=edge, at=at, requests_by_code=codes,
            latency_buckets=tuple(buckets) if codes else (), latency_sum_ms=lat_sum,
            request_bytes=req_b, response_bytes=resp_b,
            tcp_connections_opened=t.opened, tcp_connections_closed=t.closed,
            tcp_sent_bytes=t.sent, tcp_received_bytes=t.received,
            reporter=self._reporters.get(edge, ""),
        )
