"""RingMetricsStore and EdgeAggregator without any process."""

from __future__ import annotations

from shoal.telemetry.ingest import EdgeAggregator
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample
from shoal.telemetry.store import RingMetricsStore, quantile

EDGE = Edge("client", "default", "client", "echo.default.svc.cluster.local", "default")


def sample(at: float, ok: int, bad: int = 0, fast: int | None = None) -> EdgeSample:
    total = ok + bad
    fast = total if fast is None else fast
    buckets = tuple(fast if b < 100 else total for b in LATENCY_BUCKETS_MS)
    return EdgeSample(EDGE, at, {200: ok, 503: bad} if bad else {200: ok}, buckets)


def test_rates_over_a_window_and_counter_reset() -> None:
    store = RingMetricsStore(clock=lambda: 1000.0)
    store.add([sample(900, 10), sample(950, 20, 2), sample(990, 30, 4)])
    r = store.rates(60, now=1000)[0]  # baseline: the sample at 940 or before (900)
    assert (r.requests, r.errors, r.by_code_class) == (24.0, 4.0, {"2xx": 20.0, "5xx": 4.0})
    store.add([sample(995, 1)])  # the sidecar restarted: counters start again
    latest = store.latest()[0]
    assert latest.requests_by_code == {200: 31, 503: 4}  # never decreases
    assert store.good_total("echo", 100, now=1000) == (21.0, 25.0)  # since t=900


def test_latency_quantiles_and_threshold() -> None:
    store = RingMetricsStore()
    store.add([sample(0, 0), sample(10, 100, fast=90)])
    r = store.rates(60, now=10)[0]
    assert r.p50_ms is not None and r.p50_ms <= 50
    assert r.p99_ms is not None and 50 < r.p99_ms <= 100
    assert store.good_total(EDGE.destination_service, 60, latency_threshold_ms=50, now=10) \
        == (90.0, 100.0)
    assert quantile(0.5, (1, 5), [0, 0, 0]) is None


def test_memory_is_bounded() -> None:
    store = RingMetricsStore(fine=5, fine_span=60, coarse=30, retention=300)
    store.add([sample(t, t) for t in range(0, 3600, 1)])
    series = store._series[EDGE]
    assert len(series.fine) <= 14 and len(series.coarse) <= 11


def test_aggregator_counts_client_side_entries_only() -> None:
    agg = EdgeAggregator(clock=lambda: 5.0)
    entry = {"direction": "outbound", "kind": "http", "status": 503, "response_flags": "URX",
             "duration_ms": 3, "bytes_received": 0, "bytes_sent": 10, "source_workload": "a",
             "source_namespace": "default", "source_service": "a", "reporter": "a.default",
             "upstream_cluster": "outbound|8080|v1|echo.default.svc.cluster.local"}
    samples = agg.add([entry, dict(entry, status=200, response_flags="-"),
                       dict(entry, direction="inbound")])
    assert len(samples) == 1
    s = samples[0]
    assert s.requests_by_code == {503: 1, 200: 1}
    assert s.edge.destination_subset == "v1" and s.edge.destination_port == 8080
    assert s.latency_buckets[1] == 2  # <= 5 ms
