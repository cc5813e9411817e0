"""Access-log entries -> exact per-edge counters -> :class:`EdgeSample`.

Only the client side (``direction == "outbound"``, Istio's ``reporter="source"``)
counts: every downstream request of a source sidecar is one entry with its final status
(after retries), response flags, duration and bytes, so counts are exact per edge and
code. See docs/adr/0008-telemetry-collection.md.

Series are bounded (docs/adr/0025): a reporter (sidecar) creates at most
:data:`MAX_SERIES_PER_REPORTER` of them (a request series is edge + code + flags, a TCP
series an edge), all reporters together at most :data:`MAX_SERIES`. An entry that would
create one more is not counted: it is dropped, counted per reporter in ``dropped`` (at
most :data:`MAX_DROP_REPORTERS` reporters by name, the rest as ``other``), and the first
drop of each reporter is logged as a warning. Series that exist keep counting.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.telemetry.accesslog import Entry
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample, Security
from shoal.telemetry.names import parse_outbound_cluster

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
MAX_SERIES_PER_REPORTER = 1_000
MAX_SERIES = 10_000
MAX_DROP_REPORTERS = 100  # reporters named in the drop counter; the rest are "other"
OTHER = "other"


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
        security=Security.MUTUAL_TLS if entry.get("mtls") else Security.NONE,
    )


def _int(v: object) -> int:
    return v if isinstance(v, int) else 0


class EdgeAggregator:
    """Cumulative counters since the control plane started, per edge (+code, flags)."""

    def __init__(self, clock: Callable[[], float] = time.time, *,
                 per_reporter: int = MAX_SERIES_PER_REPORTER,
                 max_series: int = MAX_SERIES) -> None:
        self.requests: dict[RequestKey, RequestCounters] = {}
        self.tcp: dict[Edge, TcpCounters] = {}
        self.dropped: dict[str, int] = {}  # reporter -> entries not counted (bounded)
        self._keys: dict[Edge, list[RequestKey]] = {}  # the request series of each edge
        self._reporters: dict[Edge, str] = {}
        self._series_of: dict[str, int] = {}  # reporter -> series it created
        self._per_reporter = per_reporter
        self._max_series = max_series
        self._clock = clock

    @property
    def series(self) -> int:
        return len(self.requests) + len(self.tcp)

    def _admit(self, reporter: str) -> bool:
        """May ``reporter`` create one more series? Counts it if so, the drop if not."""
        mine = self._series_of.get(reporter, 0)
        if mine < self._per_reporter and self.series < self._max_series:
            self._series_of[reporter] = mine + 1
            return True
        name = reporter if reporter in self.dropped or \
            len(self.dropped) < MAX_DROP_REPORTERS else OTHER
        if name not in self.dropped:
            log.warning("telemetry series limit reached: entries that would create new "
                        "series are dropped (counted in shoal_telemetry_dropped_series)",
                        extra={"reporter": name, "series": mine,
                               "per_reporter": self._per_reporter,
                               "total": self.series, "max_series": self._max_series})
        self.dropped[name] = self.dropped.get(name, 0) + 1
        return False

    def add(self, entries: Iterable[Entry]) -> list[EdgeSample]:
        """Count the client-side entries; return fresh samples of the edges touched."""
        touched: set[Edge] = set()
        for e in entries:
            if e.get("direction") != "outbound":
                continue
            reporter = str(e.get("reporter", ""))
            if e.get("kind") == "tcp":
                edge = edge_of(e, "tcp")
                t = self.tcp.get(edge)
                if t is None:
                    if not self._admit(reporter):
                        continue
                    t = self.tcp[edge] = TcpCounters()
                t.opened += 1
                t.closed += 1
                t.sent += _int(e.get("bytes_received"))  # what the app sent upstream
                t.received += _int(e.get("bytes_sent"))
            else:
                protocol = "grpc" if "grpc" in str(e.get("content_type", "")) else "http"
                edge = edge_of(e, protocol)
                key = RequestKey(edge, _int(e.get("status")), str(e.get("response_flags") or "-"))
                c = self.requests.get(key)
                if c is None:
                    if not self._admit(reporter):
                        continue
                    c = self.requests[key] = RequestCounters()
                    self._keys.setdefault(edge, []).append(key)
                c.observe(float(_int(e.get("duration_ms"))), _int(e.get("bytes_received")),
                          _int(e.get("bytes_sent")))
            self._reporters[edge] = reporter
            touched.add(edge)
        now = self._clock()
        return [self.sample(edge, now) for edge in touched]

    def sample(self, edge: Edge, at: float) -> EdgeSample:
        codes: dict[int, int] = {}
        buckets = [0] * len(LATENCY_BUCKETS_MS)
        lat_sum = 0.0
        req_b = resp_b = 0
        for key in self._keys.get(edge, ()):
            c = self.requests[key]
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
            node=self._reporters.get(edge, ""),
        )
