"""RingMetricsStore: a bounded history of :class:`EdgeSample` per edge.

Per edge, samples are kept at ``fine`` resolution (default 5 s) for ``fine_span`` (1 h)
and at ``coarse`` resolution (60 s) up to ``retention`` (6 h): at most ~1,020 samples
per edge whatever the traffic. A sample arriving in the same slot as the newest one
replaces it. Counters that go down (a sidecar restarted) are handled like Prometheus'
``rate()``: the drop starts a new run whose values are added on top of the old ones, so
stored counters never decrease.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeRates, EdgeSample


def _is_reset(prev: EdgeSample, cur: EdgeSample) -> bool:
    if any(cur.requests_by_code.get(c, 0) < n for c, n in prev.requests_by_code.items()):
        return True
    return (cur.tcp_connections_opened < prev.tcp_connections_opened
            or cur.request_bytes < prev.request_bytes
            or cur.response_bytes < prev.response_bytes)


def _plus(a: EdgeSample, b: EdgeSample) -> EdgeSample:
    """b with a's counters added (a = the total of earlier runs)."""
    codes = dict(a.requests_by_code)
    for c, n in b.requests_by_code.items():
        codes[c] = codes.get(c, 0) + n
    la, lb = a.latency_buckets, b.latency_buckets
    width = max(len(la), len(lb))
    buckets = tuple((la[i] if i < len(la) else 0) + (lb[i] if i < len(lb) else 0)
                    for i in range(width))
    return replace(
        b, requests_by_code=codes, latency_buckets=buckets,
        latency_sum_ms=a.latency_sum_ms + b.latency_sum_ms,
        request_bytes=a.request_bytes + b.request_bytes,
        response_bytes=a.response_bytes + b.response_bytes,
        tcp_connections_opened=a.tcp_connections_opened + b.tcp_connections_opened,
        tcp_connections_closed=a.tcp_connections_closed + b.tcp_connections_closed,
        tcp_sent_bytes=a.tcp_sent_bytes + b.tcp_sent_bytes,
        tcp_received_bytes=a.tcp_received_bytes + b.tcp_received_bytes,
    )


@dataclass
class _Series:
    fine: deque[EdgeSample] = field(default_factory=deque)
    coarse: deque[EdgeSample] = field(default_factory=deque)
    last_raw: EdgeSample | None = None
    offset: EdgeSample | None = None  # the sum of earlier runs (before resets)

    def history(self) -> list[EdgeSample]:
        return [*self.coarse, *self.fine]

    @property
    def latest(self) -> EdgeSample | None:
        return self.fine[-1] if self.fine else None


def _zero(edge: Edge, at: float) -> EdgeSample:
    return EdgeSample(edge=edge, at=at)


def _total(s: EdgeSample) -> int:
    return sum(s.requests_by_code.values())


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (last = +Inf total)."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    i = bisect.bisect_left(list(cumulative), rank)
    if i >= len(bounds):  # in the +Inf bucket: the highest finite bound
        return float(bounds[-1])
    lo = bounds[i - 1] if i > 0 else 0.0
    below = cumulative[i - 1] if i > 0 else 0.0
    inside = cumulative[i] - below
    if inside <= 0:
        return float(bounds[i])
    return lo + (bounds[i] - lo) * (rank - below) / inside


class RingMetricsStore:
    """The :class:`~shoal.telemetry.model.MetricsStore` of the control plane."""

    def __init__(self, *, fine: float = 5.0, fine_span: float = 3600.0, coarse: float = 60.0,
                 retention: float = 6 * 3600.0, clock: object = time.time) -> None:
        self._fine, self._fine_span = fine, fine_span
        self._coarse, self._retention = coarse, retention
        self._clock = clock
        self._series: dict[Edge, _Series] = {}

    # -- writing ---------------------------------------------------------------------------
    def add(self, samples: Sequence[EdgeSample]) -> None:
        for raw in samples:
            s = self._series.setdefault(raw.edge, _Series())
            if s.last_raw is not None and raw.at < s.last_raw.at:
                continue  # out of order: ignore
            if s.last_raw is not None and _is_reset(s.last_raw, raw):
                s.offset = s.last_raw if s.offset is None else _plus(s.offset, s.last_raw)
            s.last_raw = raw
            adjusted = raw if s.offset is None else _plus(s.offset, raw)
            if s.fine and int(s.fine[-1].at // self._fine) == int(raw.at // self._fine) \
                    and len(s.fine) > 1:
                s.fine[-1] = adjusted
            else:
                s.fine.append(adjusted)
            self._compact(s, raw.at)

    def _compact(self, s: _Series, now: float) -> None:
        while len(s.fine) > 2 and s.fine[0].at < now - self._fine_span:
            old = s.fine.popleft()
            if not s.coarse or old.at - s.coarse[-1].at >= self._coarse:
                s.coarse.append(old)
        while s.coarse and s.coarse[0].at < now - self._retention:
            s.coarse.popleft()

    # -- reading ---------------------------------------------------------------------------
    def edges(self) -> list[Edge]:
        return list(self._series)

    def latest(self) -> list[EdgeSample]:
        """The newest (reset-adjusted, never decreasing) sample of every edge."""
        return [s.fine[-1] for s in self._series.values() if s.fine]

    def _window(self, s: _Series, start: float, end: float
                ) -> tuple[EdgeSample, EdgeSample] | None:
        history = [x for x in s.history() if x.at <= end]
        if not history:
            return None
        last = history[-1]
        before = [x for x in history if x.at <= start]
        first = before[-1] if before else _zero(last.edge, start)
        return first, last

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        end = self._now(now)
        out = []
        for s in self._series.values():
            pair = self._window(s, end - window_seconds, end)
            if pair is not None:
                out.append(_rates(*pair, window_seconds))
        return out

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        end = self._now(now)
        good = total = 0.0
        for edge, s in self._series.items():
            if destination_service not in (edge.destination_service,
                                           edge.destination_service.split(".")[0]):
                continue
            pair = self._window(s, end - window_seconds, end)
            if pair is None:
                continue
            first, last = pair
            n = _total(last) - _total(first)
            total += n
            if latency_threshold_ms is None:
                errors = sum(v - first.requests_by_code.get(c, 0)
                             for c, v in last.requests_by_code.items() if c >= 500)
                good += n - errors
            else:
                good += _below(first, last, latency_threshold_ms)
        return good, total

    def _now(self, now: float | None) -> float:
        return now if now is not None else self._clock()  # type: ignore[operator]


def _bucket_delta(first: EdgeSample, last: EdgeSample) -> list[float]:
    lb, fb = last.latency_buckets, first.latency_buckets
    return [lb[i] - (fb[i] if i < len(fb) else 0) for i in range(len(lb))]


def _below(first: EdgeSample, last: EdgeSample, threshold: float) -> float:
    delta = _bucket_delta(first, last)
    if not delta:
        return 0.0
    bounds = list(LATENCY_BUCKETS_MS)
    i = bisect.bisect_right(bounds, threshold) - 1
    if i < 0:
        return 0.0
    return float(delta[min(i, len(delta) - 1)])


def _rates(first: EdgeSample, last: EdgeSample, window: float) -> EdgeRates:
    codes = {c: n - first.requests_by_code.get(c, 0) for c, n in last.requests_by_code.items()}
    requests = float(sum(codes.values()))
    errors = float(sum(n for c, n in codes.items() if c >= 500))
    classes: dict[str, float] = {}
    for c, n in codes.items():
        key = f"{c // 100}xx" if c else "0"
        classes[key] = classes.get(key, 0.0) + n
    delta = _bucket_delta(first, last)
    cumulative = [*delta, requests] if delta else []

    def q(p: float) -> float | None:
        return quantile(p, LATENCY_BUCKETS_MS, cumulative)

    return EdgeRates(
        edge=last.edge, window_seconds=window, requests=requests,
        rps=requests / window if window else 0.0, errors=errors,
        error_ratio=errors / requests if requests else 0.0, by_code_class=classes,
        p50_ms=q(0.5), p90_ms=q(0.9), p99_ms=q(0.99),
        request_bytes=float(last.request_bytes - first.request_bytes),
        response_bytes=float(last.response_bytes - first.response_bytes),
        tcp_connections=float(last.tcp_connections_opened - first.tcp_connections_opened),
    )
