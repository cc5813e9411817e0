"""RingMetricsStore: a bounded in-memory history of :class:`EdgeSample` per series.

A *series* is one (edge, reporting node): several proxies may report the same edge
(replicas of a destination), each with its own cumulative counters, so each gets its own
series and its own reset handling; queries (:meth:`~RingMetricsStore.rates`,
:meth:`~RingMetricsStore.good_total`, :meth:`~RingMetricsStore.latest`) answer per *edge*,
summed over its series.

Per series, samples are kept at ``fine`` resolution (default 5 s) for ``fine_span`` (1 h)
and at ``coarse`` resolution (60 s) up to ``retention`` (6 h): at most ~1,020 samples
per series whatever the traffic. A sample arriving in the same slot as the newest one
replaces it; a sample older than the newest one of its series is ignored. Resets are
handled like Prometheus' ``rate()``: a counter that goes down, or a new ``incarnation``
of the reporting agent, starts a new run whose values are added on top of the old ones,
so stored counters never decrease (:class:`Resets`).

A window's count is its last sample minus its baseline (:func:`baseline`). A series' first
sample already holds what the proxy counted before anyone heard of it: those counts are
in a window when the proxy's counters started inside it (the agent says since when:
``EdgeSample.since``), and otherwise not counted at all — a control plane that restarts
without history does not show hours of a proxy's traffic as a burst (docs/adr/0044).
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeRates, EdgeSample

SeriesKey = tuple[Edge, str]  # (edge, node id of the proxy that reports it)
Pair = tuple[EdgeSample, EdgeSample]  # (baseline, last) of one series over a window

_INT_COUNTERS = ("request_bytes", "response_bytes", "tcp_connections_opened",
                 "tcp_connections_closed", "tcp_sent_bytes", "tcp_received_bytes")


def series_key(s: EdgeSample) -> SeriesKey:
    return s.edge, s.node


def _total(s: EdgeSample) -> int:
    return sum(s.requests_by_code.values())


def _buckets(s: EdgeSample, width: int) -> tuple[int, ...]:
    """``s``'s cumulative latency buckets, ``width`` long: a missing +Inf bucket is the
    request total, other missing buckets (no histogram at all) are zero."""
    b = s.latency_buckets
    if len(b) >= width:
        return b
    if len(b) == len(LATENCY_BUCKETS_MS) and width > len(b):
        b = (*b, _total(s))
    return b + (0,) * (width - len(b))


def is_reset(prev: EdgeSample, cur: EdgeSample) -> bool:
    """Did the reporting proxy's counters restart between ``prev`` and ``cur``? A new
    incarnation of its agent (both named), or any counter going down."""
    if prev.incarnation and cur.incarnation and prev.incarnation != cur.incarnation:
        return True
    if any(cur.requests_by_code.get(c, 0) < n for c, n in prev.requests_by_code.items()):
        return True
    if any(getattr(cur, f) < getattr(prev, f) for f in _INT_COUNTERS):
        return True
    width = min(len(prev.latency_buckets), len(cur.latency_buckets))
    return any(c < p for p, c in zip(prev.latency_buckets[:width],
                                     cur.latency_buckets[:width], strict=True))


def plus(a: EdgeSample, b: EdgeSample) -> EdgeSample:
    """b with a's counters added (a = the total of earlier runs, or another series)."""
    codes = dict(a.requests_by_code)
    for c, n in b.requests_by_code.items():
        codes[c] = codes.get(c, 0) + n
    width = max(len(a.latency_buckets), len(b.latency_buckets))
    buckets = tuple(x + y for x, y in zip(_buckets(a, width), _buckets(b, width), strict=True))
    return replace(
        b, requests_by_code=codes, latency_buckets=buckets,
        latency_sum_ms=a.latency_sum_ms + b.latency_sum_ms,
        **{f: getattr(a, f) + getattr(b, f) for f in _INT_COUNTERS},
    )


@dataclass
class Resets:
    """The reset state of one series: its last raw sample and the sum of its earlier runs.
    :meth:`adjust` turns raw samples into never-decreasing ones."""

    last_raw: EdgeSample | None = None
    offset: EdgeSample | None = None  # the sum of earlier runs (before resets)

    def adjust(self, raw: EdgeSample) -> EdgeSample | None:
        """The reset-adjusted sample; None (and no change) if ``raw`` is out of order."""
        if self.last_raw is not None:
            if raw.at < self.last_raw.at:
                return None
            if is_reset(self.last_raw, raw):
                self.offset = self.last_raw if self.offset is None else plus(
                    self.offset, self.last_raw)
        self.last_raw = raw
        return self.current

    @property
    def current(self) -> EdgeSample | None:
        """The newest reset-adjusted sample."""
        if self.last_raw is None or self.offset is None:
            return self.last_raw
        return plus(self.offset, self.last_raw)


def zero(edge: Edge, at: float) -> EdgeSample:
    return EdgeSample(edge=edge, at=at)


def origin_of(first: EdgeSample) -> float:
    """Where a new series' zero baseline lies, from its first sample: when the reporting
    agent's counters started (``since``), else the sample's own time."""
    return first.at if first.since is None else min(first.since, first.at)


def baseline(history: Sequence[EdgeSample], origin: float, start: float
             ) -> EdgeSample | None:
    """A series' baseline for a window starting at ``start``, from its points (oldest
    first, none after the window's end): the newest at or before ``start``; without one,
    zero when its counters started at or after ``start`` (every count it holds was made in
    the window), else its oldest point (the counts before it were made before the window,
    or when nobody kept them: not counted rather than shown as a burst). None: no point."""
    i = bisect.bisect_right(history, start, key=lambda x: x.at)
    if i:
        return history[i - 1]
    if not history:
        return None
    return zero(history[0].edge, start) if origin >= start else history[0]


@dataclass
class _Series:
    origin: float  # where its zero baseline lies (origin_of its first sample)
    fine: deque[EdgeSample] = field(default_factory=deque)
    coarse: deque[EdgeSample] = field(default_factory=deque)
    resets: Resets = field(default_factory=Resets)

    def history(self) -> list[EdgeSample]:
        return [*self.coarse, *self.fine]

    @property
    def oldest(self) -> EdgeSample | None:
        if self.coarse:
            return self.coarse[0]
        return self.fine[0] if self.fine else None


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
    """The in-memory :class:`~shoal.telemetry.model.MetricsStore` (and the recent window
    of :class:`~shoal.telemetry.history.DurableMetricsStore`)."""

    def __init__(self, *, fine: float = 5.0, fine_span: float = 3600.0, coarse: float = 60.0,
                 retention: float = 6 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._fine, self._fine_span = fine, fine_span
        self._coarse, self._retention = coarse, retention
        self._clock = clock
        self._series: dict[SeriesKey, _Series] = {}

    # -- writing ---------------------------------------------------------------------------
    def add(self, samples: Sequence[EdgeSample]) -> None:
        """Raw samples, as the proxies report them (resets handled here)."""
        for raw in samples:
            s = self._series_of(raw)
            adjusted = s.resets.adjust(raw)
            if adjusted is not None:
                self._record(s, adjusted)

    def add_adjusted(self, samples: Sequence[EdgeSample], *, origin: float | None = None
                     ) -> None:
        """Samples whose counters are already reset-adjusted (never decrease), by a store
        that keeps the reset state (and a new series' ``origin``) itself; out-of-order
        ones are ignored."""
        for adjusted in samples:
            s = self._series_of(adjusted, origin)
            if s.fine and adjusted.at < s.fine[-1].at:
                continue
            self._record(s, adjusted)

    def _series_of(self, sample: EdgeSample, origin: float | None = None) -> _Series:
        key = series_key(sample)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(
                origin_of(sample) if origin is None else origin)
        return s

    def forget(self, key: SeriesKey) -> None:
        self._series.pop(key, None)

    def _record(self, s: _Series, adjusted: EdgeSample) -> None:
        if s.fine and int(s.fine[-1].at // self._fine) == int(adjusted.at // self._fine) \
                and len(s.fine) > 1:
            s.fine[-1] = adjusted
        else:
            s.fine.append(adjusted)
        self._compact(s, adjusted.at)

    def _compact(self, s: _Series, now: float) -> None:
        while len(s.fine) > 2 and s.fine[0].at < now - self._fine_span:
            old = s.fine.popleft()
            if not s.coarse or old.at - s.coarse[-1].at >= self._coarse:
                s.coarse.append(old)
        while s.coarse and s.coarse[0].at < now - self._retention:
            s.coarse.popleft()

    # -- reading ---------------------------------------------------------------------------
    def edges(self) -> list[Edge]:
        return list(dict.fromkeys(edge for edge, _ in self._series))

    def series_keys(self) -> list[SeriesKey]:
        return list(self._series)

    def oldest_at(self, key: SeriesKey) -> float | None:
        """When the oldest sample the ring still has of a series was taken."""
        s = self._series.get(key)
        oldest = s.oldest if s is not None else None
        return oldest.at if oldest is not None else None

    def latest(self) -> list[EdgeSample]:
        """The newest (reset-adjusted, never decreasing) sample of every edge, summed over
        the nodes that report it."""
        return sum_by_edge(s.fine[-1] for s in self._series.values() if s.fine)

    def window(self, key: SeriesKey, start: float, end: float) -> Pair | None:
        """A series' (baseline, last) over (start, end]: the newest sample at or before
        the end, and the :func:`baseline`; None: no sample by the end."""
        s = self._series.get(key)
        if s is None:
            return None
        history = [x for x in s.history() if x.at <= end]
        first = baseline(history, s.origin, start)
        return None if first is None else (first, history[-1])

    def pairs(self, start: float, end: float) -> list[Pair]:
        return [p for key in self._series if (p := self.window(key, start, end)) is not None]

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        end = self._now(now)
        return edge_rates(self.pairs(end - window_seconds, end), window_seconds)

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        end = self._now(now)
        return good_and_total(self.pairs(end - window_seconds, end), destination_service,
                              latency_threshold_ms)

    def _now(self, now: float | None) -> float:
        return now if now is not None else self._clock()


# -- per edge, from per series (shared with the durable store) -----------------------------
def sum_by_edge(samples: Iterable[EdgeSample]) -> list[EdgeSample]:
    """Samples of the same edge (from several nodes) summed into one (node "")."""
    out: dict[Edge, EdgeSample] = {}
    for s in samples:
        prev = out.get(s.edge)
        out[s.edge] = replace(s, node="", incarnation="") if prev is None else replace(
            plus(prev, s), at=max(prev.at, s.at), node="", incarnation="")
    return list(out.values())


def _by_edge(pairs: Iterable[Pair]) -> dict[Edge, Pair]:
    out: dict[Edge, Pair] = {}
    for first, last in pairs:
        prev = out.get(last.edge)
        out[last.edge] = (first, last) if prev is None else (
            plus(prev[0], first), plus(prev[1], last))
    return out


def edge_rates(pairs: Iterable[Pair], window: float) -> list[EdgeRates]:
    """Per edge, the traffic between the baselines and lasts of its series."""
    return [_rates(first, last, window) for first, last in _by_edge(pairs).values()]


def matches(edge: Edge, destination_service: str) -> bool:
    return destination_service in (edge.destination_service,
                                   edge.destination_service.split(".")[0])


def good_and_total(pairs: Iterable[Pair], destination_service: str,
                   latency_threshold_ms: float | None) -> tuple[float, float]:
    good = total = 0.0
    for first, last in pairs:
        if not last.edge.counted or not matches(last.edge, destination_service):
            continue  # (each request counts once: by its source when it has one)
        n = _total(last) - _total(first)
        total += n
        if latency_threshold_ms is None:
            errors = sum(v - first.requests_by_code.get(c, 0)
                         for c, v in last.requests_by_code.items() if c >= 500)
            good += n - errors
        else:
            good += _below(first, last, latency_threshold_ms)
    return good, total


def _bucket_delta(first: EdgeSample, last: EdgeSample) -> list[float]:
    width = max(len(first.latency_buckets), len(last.latency_buckets))
    return [b - a for a, b in zip(_buckets(first, width), _buckets(last, width), strict=True)]


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
    # the histogram's own +Inf count when the proxy sent one, else the request total
    cumulative = delta if len(delta) > len(LATENCY_BUCKETS_MS) else (
        [*delta, requests] if delta else [])

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
