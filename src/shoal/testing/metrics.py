"""An in-memory :class:`~shoal.telemetry.model.MetricsStore` fed with samples, for tests.

    store = FakeMetricsStore()
    traffic = Traffic(store, edge("productpage", "reviews", subset="v2"))
    traffic.record(at=100.0, count=50, code=200, latency_ms=12)
    traffic.record(at=160.0, count=5, code=503, latency_ms=30)
    store.rates(60, now=160.0)

It keeps every sample (no downsampling), computes rates like Prometheus' ``increase()``
(a counter that goes down is a restart: the new value counts from zero) and latency
quantiles by linear interpolation inside histogram buckets, as ``histogram_quantile``.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeRates, EdgeSample, Security

__all__ = ["FakeMetricsStore", "Traffic", "edge", "quantile_from_buckets"]


def edge(source: str, destination: str, *, subset: str = "", namespace: str = "default",
         source_workload: str | None = None, mtls: bool = True, port: int = 9080,
         protocol: str = "http") -> Edge:
    """An edge between two short service names in one namespace ("" source = outside)."""
    return Edge(
        source_workload=source_workload if source_workload is not None else (
            f"{source}-v1" if source else ""),
        source_namespace=namespace if source else "",
        source_service=source,  # canonical (short) name, as the ingest reports it
        destination_service=f"{destination}.{namespace}.svc.cluster.local",
        destination_namespace=namespace,
        destination_subset=subset,
        destination_port=port,
        protocol=protocol,
        security=Security.MUTUAL_TLS if mtls else Security.NONE,
    )


def quantile_from_buckets(q: float, bounds: Sequence[float], counts: Sequence[float]
                          ) -> float | None:
    """``histogram_quantile``: cumulative ``counts`` per upper bound in ``bounds``."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = bisect.bisect_left(list(counts), rank)
    if i >= len(bounds):
        return float(bounds[-1])
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return float(bounds[i])
    return lower + (bounds[i] - lower) * (rank - below) / in_bucket


def _increase(first: float, values: Sequence[float]) -> float:
    """Counter increase over a series, treating a decrease as a reset to zero."""
    total, prev = 0.0, first
    for v in values:
        total += v - prev if v >= prev else v
        prev = v
    return total


@dataclass
class FakeMetricsStore:
    """Every sample, per edge, in time order. ``now`` defaults to ``time.time()``."""

    retention_seconds: float = 6 * 3600
    _series: dict[Edge, list[EdgeSample]] = field(default_factory=lambda: defaultdict(list))

    def add(self, samples: Sequence[EdgeSample]) -> None:
        for s in samples:
            series = self._series[s.edge]
            bisect.insort(series, s, key=lambda x: x.at)

    def edges(self) -> list[Edge]:
        return list(self._series)

    def oldest_sample_at(self) -> float | None:
        """When the history starts (SLOs report how much of their window it covers)."""
        return min((s[0].at for s in self._series.values() if s), default=None)

    def _window(self, e: Edge, window: float, now: float) -> list[EdgeSample]:
        """The last sample at or before the window start (the baseline) and those in it."""
        series = [s for s in self._series[e] if s.at <= now]
        start = now - window
        inside = [s for s in series if s.at > start]
        before = [s for s in series if s.at <= start]
        return ([before[-1]] if before else []) + inside

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        now = time.time() if now is None else now
        out = []
        for e in self._series:
            samples = self._window(e, window_seconds, now)
            if not samples:
                continue
            out.append(self._rates(e, samples, window_seconds))
        return out

    def _rates(self, e: Edge, samples: list[EdgeSample], window: float) -> EdgeRates:
        base, rest = samples[0], samples[1:]
        codes = {c for s in samples for c in s.requests_by_code}
        by_code = {c: _increase(base.requests_by_code.get(c, 0),
                                [s.requests_by_code.get(c, 0) for s in rest]) for c in codes}
        requests = sum(by_code.values())
        errors = sum(n for c, n in by_code.items() if c >= 500)
        classes: dict[str, float] = defaultdict(float)
        for c, n in by_code.items():
            classes[f"{c // 100}xx"] += n
        width = len(LATENCY_BUCKETS_MS)

        def pad(s: EdgeSample) -> tuple[int, ...]:
            return tuple(s.latency_buckets) + (0,) * (width - len(s.latency_buckets))

        buckets = [_increase(pad(base)[i], [pad(s)[i] for s in rest]) for i in range(width)]
        buckets.append(requests)  # +Inf
        bounds = (*LATENCY_BUCKETS_MS, LATENCY_BUCKETS_MS[-1])

        def q(p: float) -> float | None:
            return quantile_from_buckets(p, bounds, buckets) if requests else None

        return EdgeRates(
            edge=e, window_seconds=window, requests=requests, rps=requests / window,
            errors=errors, error_ratio=errors / requests if requests else 0.0,
            by_code_class=dict(classes), p50_ms=q(0.5), p90_ms=q(0.9), p99_ms=q(0.99),
            request_bytes=_increase(base.request_bytes, [s.request_bytes for s in rest]),
            response_bytes=_increase(base.response_bytes, [s.response_bytes for s in rest]),
        )

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        now = time.time() if now is None else now
        good = total = 0.0
        for e in self._series:
            if e.destination_service != destination_service:
                continue
            samples = self._window(e, window_seconds, now)
            if len(samples) < 2:
                continue
            r = self._rates(e, samples, window_seconds)
            total += r.requests
            if latency_threshold_ms is None:
                good += r.requests - r.errors
            else:
                good += self._faster_than(samples, latency_threshold_ms)
        return good, total

    @staticmethod
    def _faster_than(samples: list[EdgeSample], threshold_ms: float) -> float:
        # count in the largest bucket whose bound is <= the threshold (conservative)
        i = bisect.bisect_right(LATENCY_BUCKETS_MS, threshold_ms) - 1
        if i < 0:
            return 0.0

        def at(s: EdgeSample) -> int:
            return s.latency_buckets[i] if i < len(s.latency_buckets) else 0

        return _increase(at(samples[0]), [at(s) for s in samples[1:]])


@dataclass
class Traffic:
    """Cumulative counters of one edge: record requests, it adds the sample to the store."""

    store: FakeMetricsStore
    edge: Edge
    _codes: dict[int, int] = field(default_factory=dict)
    _buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    _sum: float = 0.0
    _last: EdgeSample | None = None

    def record(self, at: float, count: int, *, code: int = 200, latency_ms: float = 5.0
               ) -> EdgeSample:
        self._codes[code] = self._codes.get(code, 0) + count
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if latency_ms <= bound:
                self._buckets[i] += count
        self._sum += latency_ms * count
        self._last = EdgeSample(self.edge, at, dict(self._codes), tuple(self._buckets),
                                self._sum, node=self.edge.source_workload)
        self.store.add([self._last])
        return self._last

    def tick(self, at: float) -> EdgeSample:
        """A report with nothing new (keeps the series going)."""
        if self._last is None:
            return self.record(at, 0)
        sample = replace(self._last, at=at)
        self.store.add([sample])
        self._last = sample
        return sample


# (source, destination, subset, requests per second, p50-ish latency ms)
BOOKINFO_EDGES: tuple[tuple[str, str, str, float, float], ...] = (
    ("", "productpage", "v1", 12.0, 40.0),
    ("productpage", "details", "v1", 12.0, 4.0),
    ("productpage", "reviews", "v1", 4.0, 6.0),
    ("productpage", "reviews", "v2", 4.0, 18.0),
    ("productpage", "reviews", "v3", 4.0, 22.0),
    ("reviews", "ratings", "v1", 8.0, 3.0),
)


def bookinfo_traffic(store: FakeMetricsStore, *, start: float, end: float, step: float = 5.0,
                     error_ratio: dict[str, float] | None = None,
                     slow_ms: dict[str, float] | None = None) -> None:
    """Feed ``store`` with the demo's traffic from ``start`` to ``end`` (unix seconds).

    ``error_ratio`` maps a destination service (short name) to the fraction of its
    requests that answer 503; ``slow_ms`` to the latency of its slowest 10%."""
    errors = error_ratio or {}
    slow = slow_ms or {}
    feeds = []
    for src, dst, subset, rps, ms in BOOKINFO_EDGES:
        workload = "" if not src else f"{src}-v2" if src == "reviews" else f"{src}-v1"
        feeds.append((Traffic(store, edge(src, dst, subset=subset, source_workload=workload,
                                           mtls=bool(src))), dst, rps, ms))
    t = start
    while t <= end:
        for traffic, dst, rps, ms in feeds:
            n = round(rps * step)
            bad = round(n * errors.get(dst, 0.0))
            slow_n = round(n * 0.1) if dst in slow else 0
            traffic.record(t, n - bad - slow_n, code=200, latency_ms=ms)
            if slow_n:
                traffic.record(t, slow_n, code=200, latency_ms=slow[dst])
            if bad:
                traffic.record(t, bad, code=503, latency_ms=ms / 2)
        t += step
