"""SLOs: validation of the kind, and attainment / budget / burn rates / alert state from
samples fed to the in-memory metrics store."""

from __future__ import annotations

import pytest

from shoal.api import parse_yaml
from shoal.errors import ValidationError
from shoal.telemetry.slo import AlertState, SloEvaluator, service_fqdn
from shoal.testing.metrics import FakeMetricsStore, Traffic, bookinfo_traffic, edge

T0 = 1_700_000_000.0
HOUR = 3600.0


def slo(spec: str, name: str = "reviews") -> object:
    text = f"""
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {{name: {name}}}
spec: {spec}
"""
    (res,) = parse_yaml(text)
    return res


def test_defaults_are_the_sre_multiwindow_pairs():
    r = slo("{service: reviews, sli: {availability: {}}, target: 99.9}")
    pairs = [(b.long_window, b.short_window, b.factor) for b in r.spec.burn_rates]
    assert pairs == [("1h", "5m", 14.4), ("6h", "30m", 6.0)]
    assert r.spec.window_seconds == 30 * 86400


def test_every_violation_has_its_path():
    with pytest.raises(ValidationError) as e:
        slo("{service: 'Bad_Host', sli: {availability: {}, latency: {thresholdMs: 5}},"
            " target: 100, window: 2w, extra: 1,"
            " alerting: {burnRates: [{longWindow: 5m, shortWindow: 1h, factor: 0}]}}")
    paths = {v.path for v in e.value.violations}
    assert {"spec.service", "spec.sli", "spec.target", "spec.window", "spec.extra",
            "spec.alerting.burnRates[0].factor"} <= paths
    with pytest.raises(ValidationError) as e:
        slo("{service: r, sli: {latency: {}}, target: 99,"
            " alerting: {burnRates: [{longWindow: 5m, shortWindow: 1h, factor: 2}]}}")
    msgs = {(v.path, v.message) for v in e.value.violations}
    assert ("spec.sli.latency.thresholdMs", "is required") in msgs
    assert ("spec.alerting.burnRates[0]", "shortWindow must be shorter than longWindow") in msgs


def test_hosts_resolve_like_istio():
    assert service_fqdn("reviews", "shop") == "reviews.shop.svc.cluster.local"
    assert service_fqdn("reviews.other", "shop") == "reviews.other.svc.cluster.local"
    assert service_fqdn("reviews.other.svc.cluster.local", "x") == \
        "reviews.other.svc.cluster.local"


def test_healthy_traffic_is_ok_with_untouched_budget():
    store = FakeMetricsStore()
    bookinfo_traffic(store, start=T0, end=T0 + 2 * HOUR, step=60)
    (status,) = SloEvaluator(store, started=T0).evaluate(
        [slo("{service: reviews, sli: {availability: {}}, target: 99.9}")], now=T0 + 2 * HOUR)
    assert status.state is AlertState.OK
    assert status.attainment == 100.0
    assert status.budget_remaining == 1.0
    d = status.to_dict()
    assert d["observedSeconds"] == 2 * HOUR  # a 30d window, but only 2 h of data
    assert d["total"] == pytest.approx(12 * 2 * HOUR)
    assert [b["firing"] for b in d["burnRates"]] == [False, False]


def test_injected_fault_burns_the_budget_and_pages():
    store = FakeMetricsStore()
    now = T0 + 3 * HOUR
    bookinfo_traffic(store, start=T0, end=now - 30 * 60, step=60)
    # the last 30 minutes: 5% of reviews answers 503 (50x the 0.1% budget); the new feed
    # starts its counters from zero, like a restarted sidecar
    bookinfo_traffic(store, start=now - 29 * 60, end=now, step=60,
                     error_ratio={"reviews": 0.05})
    (status,) = SloEvaluator(store, started=T0).evaluate(
        [slo("{service: reviews, sli: {availability: {}}, target: 99.9}")], now=now)
    short = status.burn_rates[0]
    assert short.short_burn == pytest.approx(50, rel=0.05)
    assert short.long_burn > 14.4 and short.firing
    assert status.state is AlertState.CRITICAL
    assert "5m" in status.reason
    assert status.budget_remaining < 1.0
    d = status.to_dict()["errorBudget"]
    assert d["spentRequests"] == pytest.approx(0.05 * 12 * 30 * 60, rel=0.1)
    assert d["remainingRequests"] == pytest.approx(d["allowedRequests"] - d["spentRequests"])


def test_a_long_burn_without_a_short_one_is_a_warning_not_a_page():
    store = FakeMetricsStore()
    t = Traffic(store, edge("productpage", "reviews"))
    now = T0 + 2 * HOUR
    t.record(T0, 0)
    t.record(now - 40 * 60, 1000, code=200)
    t.record(now - 30 * 60, 400, code=503)  # 30 minutes ago, and then healthy
    t.record(now - 60, 1000, code=200)
    t.record(now, 10, code=200)
    (status,) = SloEvaluator(store, started=T0).evaluate(
        [slo("{service: reviews, sli: {availability: {}}, target: 99}")], now=now)
    one_hour = status.burn_rates[0]
    assert one_hour.long_burn > one_hour.factor and not one_hour.firing
    assert status.state is AlertState.WARNING
    assert "recovered" in status.reason


def test_latency_sli_burns_on_slow_responses():
    store = FakeMetricsStore()
    now = T0 + HOUR
    bookinfo_traffic(store, start=T0, end=now, step=60, slow_ms={"ratings": 900.0})
    spec = "{service: ratings, sli: {latency: {thresholdMs: 250}}, target: 99}"
    (slow,) = SloEvaluator(store, started=T0).evaluate([slo(spec, "ratings")], now=now)
    assert slow.sli == "latency" and slow.threshold_ms == 250
    assert slow.attainment == pytest.approx(90, abs=1)  # 10% slower than 250 ms
    assert slow.burn_rates[0].short_burn == pytest.approx(10, rel=0.1)
    assert slow.state is not AlertState.OK  # budget long spent
    avail = slo("{service: ratings, sli: {availability: {}}, target: 99}", "ratings-avail")
    (ok,) = SloEvaluator(store, started=T0).evaluate([avail], now=now)
    assert ok.state is AlertState.OK  # slow is not unavailable


def test_no_traffic_is_ok_and_says_so():
    (status,) = SloEvaluator(FakeMetricsStore(), started=T0).evaluate(
        [slo("{service: reviews, sli: {availability: {}}, target: 99.9}")], now=T0 + 60)
    assert status.state is AlertState.OK and status.attainment is None
    assert status.reason == "no traffic in the window"
