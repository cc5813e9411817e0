"""RingMetricsStore without any process."""

from __future__ import annotations

from dataclasses import replace

from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample, Reporter
from shoal.telemetry.store import RingMetricsStore, quantile

EDGE = Edge("client", "default", "client", "echo.default.svc.cluster.local", "default")


def sample(at: float, ok: int, bad: int = 0, fast: int | None = None, *, node: str = "",
           incarnation: str = "") -> EdgeSample:
    total = ok + bad
    fast = total if fast is None else fast
    buckets = tuple(fast if b < 100 else total for b in LATENCY_BUCKETS_MS)
    return EdgeSample(EDGE, at, {200: ok, 503: bad} if bad else {200: ok}, buckets,
                      node=node, incarnation=incarnation)


def test_rates_over_a_window_and_counter_reset() -> None:
    store = RingMetricsStore(clock=lambda: 1000.0)
    store.add([sample(900, 10), sample(950, 20, 2), sample(990, 30, 4)])
    r = store.rates(60, now=1000)[0]  # baseline: the sample at 940 or before (900)
    assert (r.requests, r.errors, r.by_code_class) == (24.0, 4.0, {"2xx": 20.0, "5xx": 4.0})
    store.add([sample(995, 1)])  # the sidecar restarted: counters start again
    latest = store.latest()[0]
    assert latest.requests_by_code == {200: 31, 503: 4}  # never decreases
    assert store.good_total("echo", 100, now=1000) == (21.0, 25.0)  # since t=900


def test_each_node_is_its_own_series_and_one_restarting_is_not_double_counted() -> None:
    store = RingMetricsStore()
    a = [sample(0, 0, node="echo-1", incarnation="a1"), sample(0, 0, node="echo-2")]
    store.add(a)
    store.add([sample(10, 100, 5, node="echo-1", incarnation="a1"),
               sample(10, 40, node="echo-2")])
    # echo-1's agent restarted: a new incarnation, its counters from zero again
    store.add([sample(20, 7, node="echo-1", incarnation="a2"), sample(20, 50, node="echo-2")])
    assert store.edges() == [EDGE]
    (r,) = store.rates(30, now=20)
    assert (r.requests, r.errors) == (162.0, 5.0)  # 105 + 7 from echo-1, 50 from echo-2
    assert store.good_total("echo", 30, now=20) == (157.0, 162.0)
    assert store.good_total("echo", 30, latency_threshold_ms=100, now=20) == (162.0, 162.0)
    (latest,) = store.latest()
    assert latest.requests_by_code == {200: 157, 503: 5} and latest.at == 20
    # only the last 10 s: echo-1 went 105 -> 105 + 7, echo-2 40 -> 50
    assert store.good_total("echo", 10, now=20) == (17.0, 17.0)


def test_a_new_incarnation_is_a_reset_even_when_its_counters_are_higher() -> None:
    store = RingMetricsStore()
    store.add([sample(0, 10, incarnation="a1"), sample(5, 20, incarnation="a1"),
               sample(10, 30, incarnation="a2")])  # a2 counted 30 since it started
    assert store.good_total("echo", 60, now=10) == (50.0, 50.0)
    # without incarnations only a decrease says so: 20 -> 30 is 10 more requests
    plain = RingMetricsStore()
    plain.add([sample(0, 10), sample(5, 20), sample(10, 30)])
    assert plain.good_total("echo", 60, now=10) == (30.0, 30.0)


def test_slis_count_each_request_once() -> None:
    store = RingMetricsStore()
    inbound = replace(EDGE, reporter=Reporter.DESTINATION)  # the same calls, seen by echo
    outside = replace(inbound, source_workload="", source_namespace="", source_service="")
    store.add([sample(0, 0), sample(10, 10)])
    store.add([replace(s, edge=inbound) for s in (sample(0, 0), sample(10, 10))])
    store.add([replace(s, edge=outside) for s in (sample(0, 0), sample(10, 3))])
    assert store.good_total("echo", 60, now=10) == (13.0, 13.0)
    assert len(store.rates(60, now=10)) == 3  # every edge still has its rates


def test_out_of_order_samples_are_ignored() -> None:
    store = RingMetricsStore()
    store.add([sample(0, 0), sample(10, 50), sample(5, 20), sample(20, 60)])
    # 20 at t=5 arrived after 50 at t=10: neither a reset nor a sample
    assert store.good_total("echo", 60, now=20) == (60.0, 60.0)
    assert [s.requests_by_code for s in store.latest()] == [{200: 60}]
    # per series: another node may report an older time than this one's newest
    store.add([sample(15, 3, node="other")])
    assert store.good_total("echo", 60, now=20) == (63.0, 63.0)


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
    series = store._series[(EDGE, "")]
    assert len(series.fine) <= 14 and len(series.coarse) <= 11


# -- a series' first sample (docs/adr/0044) ------------------------------------------------
def test_a_first_sample_counts_when_its_counters_started_in_the_window() -> None:
    store = RingMetricsStore()
    # a proxy whose agent started at 995 made 41 requests before its first report at 1000
    store.add([replace(sample(1000, 41), since=995.0), replace(sample(1010, 50), since=995.0)])
    assert store.good_total("echo", 15, now=1010) == (50.0, 50.0)  # window from 995
    assert store.good_total("echo", 30 * 86400, now=1010) == (50.0, 50.0)
    # a window starting at the first report holds only what came after it
    assert store.good_total("echo", 10, now=1010) == (9.0, 9.0)
    # without `since` (an older agent) the counts are placed at the first sample
    plain = RingMetricsStore()
    plain.add([sample(1000, 41), sample(1010, 50)])
    assert plain.good_total("echo", 10.001, now=1010) == (50.0, 50.0)


def test_a_proxy_first_heard_of_after_hours_is_not_a_burst() -> None:
    """A control plane restarted without history: a proxy's first report holds three
    hours of counts. They are not this minute's traffic; the SLO window holds them."""
    store = RingMetricsStore()
    started = 1000.0 - 3 * 3600
    store.add([replace(sample(1000, 10_000, 30), since=started)])
    assert store.good_total("echo", 300, now=1000) == (0.0, 0.0)
    assert store.rates(300, now=1000)[0].requests == 0
    store.add([replace(sample(1005, 10_050, 31), since=started)])
    (r,) = store.rates(300, now=1005)
    assert (r.requests, r.errors) == (51.0, 1.0)
    assert store.good_total("echo", 30 * 86400, now=1005) == (10_050.0, 10_081.0)


def test_reports_place_the_counters_start_on_the_control_planes_clock() -> None:
    from shoal.telemetry.ingest import ProxyCounters
    from shoal.telemetry.report import StatsReport

    counters = ProxyCounters(clock=lambda: 5000.0)
    row = {"reporter": "source", "cluster": "outbound|80||echo.default.svc.cluster.local",
           "code": 200, "requests": 7,
           "durationBuckets": [7] * (len(LATENCY_BUCKETS_MS) + 1)}
    report = {"node": "client.default", "incarnation": "a1", "uptime": 120.5, "full": True,
              "http": [row]}
    (s,), _ = counters.apply(StatsReport.model_validate(report))
    assert s.since == 5000.0 - 120.5
    old_agent = {**report, "node": "web.default"}
    del old_agent["uptime"]
    (s,), _ = counters.apply(StatsReport.model_validate(old_agent))
    assert s.since is None
