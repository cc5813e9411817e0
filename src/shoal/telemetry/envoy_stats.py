"""Per-edge metrics as each proxy's Envoy counts them, and how they are read back.

Every HTTP connection manager and TCP proxy the control plane generates carries Envoy's
stats access logger (``envoy.access_loggers.stats``, docs/adr/0027): at the end of each
request (connection) it adds to counters and a histogram whose tags are the request's
bounded properties — the upstream cluster (destination service, port, subset), the
final response code after retries, the response flags, gRPC status, the verified peer's
SPIFFE ID — never a request header, path or query value. Envoy shows them on its admin
port as Prometheus text (``/stats/prometheus``, names ``envoy_shoal_<stat>``, tags as
labels). This module names those stats and tags (the generator and the reader agree
here) and parses the text into :class:`Row` values; :mod:`shoal.telemetry.report`
carries them to the control plane.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from shoal.telemetry.model import LATENCY_BUCKETS_MS

PREFIX = "shoal"  # the stats logger's stat_prefix
EXPOSED_PREFIX = f"envoy_{PREFIX}_"  # how /stats/prometheus names them
ADMIN_FILTER = rf"^{PREFIX}\."  # ?filter= for the admin endpoint

# stat names (after the prefix)
REQUESTS = "requests"
REQUEST_BYTES = "request_bytes"
RESPONSE_BYTES = "response_bytes"
DURATION = "duration"  # histogram, milliseconds, on LATENCY_BUCKETS_MS (bootstrap)
TCP_CONNECTIONS = "tcp_connections"  # counted when a connection ends
TCP_SENT = "tcp_sent_bytes"  # bytes the local side sent through the proxy
TCP_RECEIVED = "tcp_received_bytes"

# tag names
REPORTER = "reporter"  # source (outbound, gateways) | destination (inbound)
CLUSTER = "cluster"  # %UPSTREAM_CLUSTER%
CODE = "code"  # %RESPONSE_CODE%
FLAGS = "flags"  # %RESPONSE_FLAGS%
PEER = "peer"  # the other side's verified URI SAN (mTLS), "" without
GRPC = "grpc"  # %GRPC_STATUS(NUMBER)%: "" for a request that is not gRPC

HTTP_TAGS = (REPORTER, CLUSTER, CODE, FLAGS, PEER, GRPC)
TCP_TAGS = (REPORTER, CLUSTER, FLAGS, PEER)

HTTP_COUNTERS = (REQUESTS, REQUEST_BYTES, RESPONSE_BYTES)
TCP_COUNTERS = (TCP_CONNECTIONS, TCP_SENT, TCP_RECEIVED)

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class HttpKey:
    reporter: str
    cluster: str
    code: int
    flags: str
    peer: str
    grpc: str


@dataclass(frozen=True)
class TcpKey:
    reporter: str
    cluster: str
    flags: str
    peer: str


@dataclass
class HttpValues:
    requests: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    # the duration histogram: cumulative count per LATENCY_BUCKETS_MS bound, then +Inf
    # (its own total: Envoy merges histograms one admin read later than counters, so it
    # may lag ``requests`` by up to one reading)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    duration_sum_ms: float = 0.0


@dataclass
class TcpValues:
    connections: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0


@dataclass
class Snapshot:
    """One reading of an Envoy's shoal stats (cumulative since that Envoy started)."""

    http: dict[HttpKey, HttpValues] = field(default_factory=dict)
    tcp: dict[TcpKey, TcpValues] = field(default_factory=dict)


def _unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def _samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for line in text.splitlines():
        if not line.startswith(EXPOSED_PREFIX):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m["labels"] or "")}
        yield m["name"][len(EXPOSED_PREFIX):], labels, value


def _code(text: str) -> int:
    return int(text) if text.isdigit() and len(text) <= 3 else 0


_BOUNDS = {float(b): i for i, b in enumerate(LATENCY_BUCKETS_MS)}


def _bound(le: str) -> int | None:
    try:
        return _BOUNDS.get(float(le))
    except ValueError:
        return None


def parse(text: str) -> Snapshot:
    """``/stats/prometheus?filter=^shoal\\.`` text -> a :class:`Snapshot`. Lines that are
    not shoal's stats, or malformed, are skipped."""
    snap = Snapshot()
    for name, labels, value in _samples(text):
        if name in HTTP_COUNTERS or name.startswith(DURATION + "_"):
            key = HttpKey(labels.get(REPORTER, ""), labels.get(CLUSTER, ""),
                          _code(labels.get(CODE, "")), labels.get(FLAGS, ""),
                          labels.get(PEER, ""), labels.get(GRPC, ""))
            v = snap.http.setdefault(key, HttpValues())
            n = int(value)
            if name == REQUESTS:
                v.requests = n
            elif name == REQUEST_BYTES:
                v.request_bytes = n
            elif name == RESPONSE_BYTES:
                v.response_bytes = n
            elif name == f"{DURATION}_sum":
                v.duration_sum_ms = value
            elif name == f"{DURATION}_count":
                v.buckets[-1] = n
            elif name == f"{DURATION}_bucket":
                i = _bound(labels.get("le", ""))
                if i is not None:
                    v.buckets[i] = n
        elif name in TCP_COUNTERS:
            tkey = TcpKey(labels.get(REPORTER, ""), labels.get(CLUSTER, ""),
                          labels.get(FLAGS, ""), labels.get(PEER, ""))
            t = snap.tcp.setdefault(tkey, TcpValues())
            n = int(value)
            if name == TCP_CONNECTIONS:
                t.connections = n
            elif name == TCP_SENT:
                t.sent_bytes = n
            else:
                t.received_bytes = n
    return snap


def _http_less(a: HttpValues, b: HttpValues) -> bool:
    return (a.requests < b.requests or a.request_bytes < b.request_bytes
            or a.response_bytes < b.response_bytes
            or any(x < y for x, y in zip(a.buckets, b.buckets, strict=True)))


def _http_plus(a: HttpValues, b: HttpValues) -> HttpValues:
    return HttpValues(a.requests + b.requests, a.request_bytes + b.request_bytes,
                      a.response_bytes + b.response_bytes,
                      [x + y for x, y in zip(a.buckets, b.buckets, strict=True)],
                      a.duration_sum_ms + b.duration_sum_ms)


def _tcp_less(a: TcpValues, b: TcpValues) -> bool:
    return (a.connections < b.connections or a.sent_bytes < b.sent_bytes
            or a.received_bytes < b.received_bytes)


def _tcp_plus(a: TcpValues, b: TcpValues) -> TcpValues:
    return TcpValues(a.connections + b.connections, a.sent_bytes + b.sent_bytes,
                     a.received_bytes + b.received_bytes)


class Totals:
    """Cumulative counters of one agent's proxy across restarts of its Envoy.

    Feed each reading with the Envoy's *generation* (how many times the agent started it):
    a new generation, or a counter that went down, means the readings restarted from
    zero, so what the previous run counted is kept as a base and added to the new run's
    values. The result never decreases while the agent lives.
    """

    def __init__(self) -> None:
        self._generation: int | None = None
        self._last = Snapshot()  # this Envoy run's latest reading
        self._base = Snapshot()  # the sum of earlier runs

    def _fold_all(self) -> None:
        for k, v in self._last.http.items():
            self._base.http[k] = _http_plus(self._base.http[k], v) \
                if k in self._base.http else v
        for tk, t in self._last.tcp.items():
            self._base.tcp[tk] = _tcp_plus(self._base.tcp[tk], t) \
                if tk in self._base.tcp else t
        self._last = Snapshot()

    def update(self, reading: Snapshot, generation: int) -> None:
        if self._generation is not None and generation != self._generation:
            self._fold_all()
        self._generation = generation
        restarted = any(k in reading.http and _http_less(reading.http[k], v)
                        for k, v in self._last.http.items()) or \
            any(k in reading.tcp and _tcp_less(reading.tcp[k], t)
                for k, t in self._last.tcp.items())
        if restarted:  # an Envoy restart the generation did not show: fold every series
            self._fold_all()
        # series a reading no longer shows keep their last value
        self._last.http.update(reading.http)
        self._last.tcp.update(reading.tcp)

    def current(self) -> Snapshot:
        """Every series' cumulative values (base + this run)."""
        out = Snapshot()
        for k in self._base.http.keys() | self._last.http.keys():
            b, v = self._base.http.get(k), self._last.http.get(k)
            out.http[k] = _http_plus(b, v) if b and v else (b or v)  # type: ignore[assignment]
        for tk in self._base.tcp.keys() | self._last.tcp.keys():
            bt, t = self._base.tcp.get(tk), self._last.tcp.get(tk)
            out.tcp[tk] = _tcp_plus(bt, t) if bt and t else (bt or t)  # type: ignore[assignment]
        return out
