"""Issue 11 part 6 (kept by issue 12): series per reporter are bounded.

Reproduced before: 20,000 invented edges from one reporter made one ``/metrics`` scrape
282 MB and the control plane 770 MB. Now a node keeps at most MAX_SERIES_PER_NODE rows
(all nodes together at most MAX_SERIES); the excess is dropped, counted per node in
``shoal_telemetry_dropped_series_total`` and warned about once. Reports arrive as they do
from agents: ``POST /api/v1/telemetry/stats`` (shoal.telemetry.report).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shoal.telemetry import ingest
from shoal.telemetry.hub import Telemetry
from shoal.telemetry.ingest import MAX_DROP_REPORTERS, MAX_SERIES_PER_NODE, ProxyCounters
from shoal.telemetry.model import LATENCY_BUCKETS_MS
from shoal.telemetry.report import MAX_ROWS, STATS_PATH, StatsReport


def row(service: str, *, code: int = 200, requests: int = 1, reporter: str = "source"
        ) -> dict[str, Any]:
    return {"reporter": reporter, "cluster": f"outbound|80||{service}.default.svc.cluster.local",
            "code": code, "flags": "-", "requests": requests,
            "durationBuckets": [requests] * (len(LATENCY_BUCKETS_MS) + 1)}


def report(node: str, rows: list[dict[str, Any]], *, full: bool = True,
           tcp: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"node": node, "incarnation": "a1", "service": node.split(".")[0], "full": full,
            "http": rows, "tcp": list(tcp)}


async def test_one_reporter_inventing_20000_edges(caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    hub = Telemetry()
    app = web.Application()
    hub.add_routes(app)
    async with TestClient(TestServer(app)) as http:
        with caplog.at_level(logging.WARNING, logger="shoal.telemetry.ingest"):
            for batch in range(20):  # at most MAX_ROWS rows per report
                rows = [row(f"svc-{i}") for i in range(batch * MAX_ROWS, (batch + 1) * MAX_ROWS)]
                r = await http.post(STATS_PATH, json=report("mallory.default", rows))
                assert r.status == 200
            r = await http.post(STATS_PATH, json=report("web.default",
                                                         [row(f"s{i}") for i in range(3)]))
            assert r.status == 200
        assert hub.counters.series == MAX_SERIES_PER_NODE + 3
        assert len(hub.store.edges()) == MAX_SERIES_PER_NODE + 3
        assert hub.counters.dropped == {"mallory.default": 19_000}
        warnings = [r for r in caplog.records if "series limit" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].reporter == "mallory.default"  # type: ignore[attr-defined]

        body = await (await http.get("/metrics")).read()
        # a series is ~28 lines (a request counter, three histograms) of ~600 bytes: the
        # cap keeps the scrape near 1,000 of them, not 20,000 (282 MB before)
        assert len(body) < 20 * 1024 * MAX_SERIES_PER_NODE + 100_000, len(body)
        text = body.decode()
        assert 'shoal_telemetry_dropped_series_total{reporter="mallory.default"} 19000.0' in text
        assert "shoal_telemetry_series 1003.0" in text
        assert text.count('source_workload="web"') > 0  # the neighbour still counts

        # existing series keep counting; only new ones are dropped
        r = await http.post(STATS_PATH, json=report(
            "mallory.default", [row(f"svc-{i}", requests=5) for i in range(10)], full=False))
        assert r.status == 200
        assert hub.counters.dropped == {"mallory.default": 19_000}
        assert hub.counters.series == MAX_SERIES_PER_NODE + 3


def test_mesh_wide_cap_and_bounded_drop_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    counters = ProxyCounters(clock=lambda: 5.0, per_node=2, max_series=5)
    for i in range(3):
        counters.apply(StatsReport.model_validate(
            report(f"w{i}.default", [row(f"s{j}") for j in range(3)])))
    assert counters.series == 5  # w0: 2, w1: 2, w2: 1, then the mesh is full
    assert counters.dropped == {"w0.default": 1, "w1.default": 1, "w2.default": 2}
    tcp = [{"reporter": "source", "cluster": "outbound|80||db.default.svc.cluster.local",
            "connections": 1}]
    counters.apply(StatsReport.model_validate(report("w0.default", [], tcp=tcp)))
    assert counters.series == 5 and counters.dropped["w0.default"] == 2  # TCP counts too

    monkeypatch.setattr(ingest, "MAX_DROP_REPORTERS", 2)
    counters = ProxyCounters(clock=lambda: 5.0, per_node=0)
    for i in range(5):
        counters.apply(StatsReport.model_validate(report(f"w{i}.default", [row("s")])))
    assert counters.dropped == {"w0.default": 1, "w1.default": 1, "other": 3}
    assert MAX_DROP_REPORTERS >= 100


def test_sample_sums_only_its_own_edge() -> None:
    counters = ProxyCounters(clock=lambda: 5.0)
    out, resync = counters.apply(StatsReport.model_validate(report("w.default", [
        row("a", requests=2), row("a", code=503, requests=1), row("b")])))
    assert not resync
    by = {s.edge.destination_service: s for s in out}
    assert by["a.default.svc.cluster.local"].requests_by_code == {200: 2, 503: 1}
    assert by["b.default.svc.cluster.local"].requests_by_code == {200: 1}
    assert {s.node for s in out} == {"w.default"}


def test_idle_nodes_are_forgotten_and_a_new_incarnation_asks_for_every_row() -> None:
    now = [0.0]
    counters = ProxyCounters(clock=lambda: now[0])
    counters.apply(StatsReport.model_validate(report("w.default", [row("a")])))
    now[0] = ingest.NODE_IDLE_SECONDS + 1
    counters.apply(StatsReport.model_validate(report("x.default", [row("a")])))
    assert set(counters.nodes) == {"x.default"} and counters.series == 1
    # a partial report from an incarnation the control plane does not know: nothing of
    # it is kept (it may hold only some of an edge's rows), every row is asked for
    out, resync = counters.apply(StatsReport.model_validate(
        report("w.default", [row("a")], full=False)))
    assert resync and out == [] and "w.default" not in counters.nodes
    out, resync = counters.apply(StatsReport.model_validate(
        report("w.default", [row("a"), row("a", code=503)], full=True)))
    assert not resync and [s.requests_by_code for s in out] == [{200: 1, 503: 1}]
