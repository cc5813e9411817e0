"""The service graph from edge rates: nodes, aggregated edges, golden signals, mTLS."""

from __future__ import annotations

import pytest

from shoal.telemetry.topology import EXTERNAL, build_topology
from shoal.testing.metrics import FakeMetricsStore, Traffic, bookinfo_traffic, edge

T0 = 1_700_000_000.0
FQDN = "{}.default.svc.cluster.local".format


def test_bookinfo_graph():
    store = FakeMetricsStore()
    bookinfo_traffic(store, start=T0, end=T0 + 120, step=5, error_ratio={"ratings": 0.1})
    topo = build_topology(store.rates(60, now=T0 + 120), 60,
                          services=[FQDN("productpage"), FQDN("idle")]).to_dict()
    nodes = {n["name"]: n for n in topo["nodes"]}
    assert set(nodes) == {EXTERNAL, "productpage", "details", "reviews", "ratings", "idle"}
    assert len(topo["nodes"]) == len(nodes)  # a service that calls and is called: one node
    assert nodes["reviews"]["versions"] == ["v1", "v2", "v3"]
    assert nodes["reviews"]["workloads"] == ["reviews-v2"]  # the caller of ratings
    assert nodes["reviews"]["rps"] == pytest.approx(12)
    assert nodes["ratings"]["errorRatio"] == pytest.approx(0.1, abs=0.01)
    assert nodes["idle"]["requests"] == 0 and nodes["idle"]["p99Ms"] is None
    edges = {(e["source"].split(".")[0], e["target"].split(".")[0]): e for e in topo["edges"]}
    assert set(edges) == {(EXTERNAL, "productpage"), ("productpage", "details"),
                          ("productpage", "reviews"), ("reviews", "ratings")}
    pr = edges[("productpage", "reviews")]
    assert pr["subsets"] == {"v1": pytest.approx(4), "v2": pytest.approx(4),
                             "v3": pytest.approx(4)}
    assert pr["mtls"] == "full" and edges[(EXTERNAL, "productpage")]["mtls"] == "none"
    # p99 of an aggregate: the largest of its parts (reviews v3 is the slowest, 22 ms)
    assert 10 < pr["p99Ms"] <= 25
    assert pr["p50Ms"] is not None and pr["p50Ms"] < pr["p99Ms"]


def test_partial_mtls_and_an_idle_edge():
    store = FakeMetricsStore()
    a = Traffic(store, edge("a", "b", mtls=True, source_workload="a-1"))
    b = Traffic(store, edge("a", "b", mtls=False, source_workload="a-2"))
    idle = Traffic(store, edge("a", "c", mtls=True))
    for t in (T0, T0 + 30):
        a.record(t, 10)
        b.record(t, 10)
        idle.tick(t)
    topo = build_topology(store.rates(60, now=T0 + 30), 60).to_dict()
    by_target = {e["target"].split(".")[0]: e for e in topo["edges"]}
    assert by_target["b"]["mtls"] == "partial"
    assert by_target["c"]["mtls"] == "full" and by_target["c"]["rps"] == 0
    assert {n["name"]: n["workloads"] for n in topo["nodes"]}["a"] == ["a-1", "a-2", "a-v1"]


def test_the_fake_store_agrees_with_the_control_planes_store():
    ring_mod = pytest.importorskip("shoal.telemetry.store")
    ring = ring_mod.RingMetricsStore(clock=lambda: T0 + 600)
    fake = FakeMetricsStore()
    bookinfo_traffic(fake, start=T0, end=T0 + 600, step=5, error_ratio={"reviews": 0.2})
    ring.add([s for e in fake.edges() for s in fake._series[e]])
    for window in (60, 300):
        mine = {r.edge: r for r in fake.rates(window, now=T0 + 600)}
        theirs = {r.edge: r for r in ring.rates(window, now=T0 + 600)}
        assert set(mine) == set(theirs)
        for e, r in mine.items():
            assert theirs[e].requests == pytest.approx(r.requests)
            assert theirs[e].errors == pytest.approx(r.errors)
    assert ring.good_total(FQDN("reviews"), 300, now=T0 + 600) == \
        pytest.approx(fake.good_total(FQDN("reviews"), 300, now=T0 + 600))
