"""Issue 11 part 6: series per reporter are bounded.

Reproduced before: 20,000 invented edges from one reporter made one ``/metrics`` scrape
282 MB and the control plane 770 MB. Now a reporter creates at most
MAX_SERIES_PER_REPORTER series (all together at most MAX_SERIES); the excess is dropped,
counted per reporter in ``shoal_telemetry_dropped_series_total`` and warned about once.
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from shoal.telemetry import ingest
from shoal.telemetry.hub import Telemetry
from shoal.telemetry.ingest import (
    MAX_DROP_REPORTERS,
    MAX_SERIES_PER_REPORTER,
    EdgeAggregator,
)


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    v = common_pb2.AnyValue(int_value=value) if isinstance(value, int) \
        else common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=v)


def invented_edges(node: str, n: int, *, start: int = 0
                   ) -> logs_service_pb2.ExportLogsServiceRequest:
    """One outbound request to each of ``n`` services that do not exist."""
    rl = logs_pb2.ResourceLogs()
    rl.resource.attributes.extend([_kv("log_name", "shoal"), _kv("node_name", node),
                                   _kv("cluster_name", node.split(".")[0])])
    rl.instrumentation_library_logs.add().logs.extend(
        logs_pb2.LogRecord(attributes=[
            _kv("log", "access"), _kv("kind", "http"), _kv("direction", "outbound"),
            _kv("status", 200), _kv("duration_ms", 3),
            _kv("upstream_cluster", f"outbound|80||svc-{i}.default.svc.cluster.local")])
        for i in range(start, start + n))
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[rl])


def entry(reporter: str, service: str, kind: str = "http") -> dict[str, object]:
    return {"direction": "outbound", "kind": kind, "reporter": reporter, "status": 200,
            "source_workload": reporter.split(".")[0], "source_namespace": "default",
            "upstream_cluster": f"outbound|80||{service}.default.svc.cluster.local"}


async def test_one_reporter_inventing_20000_edges(caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    hub = Telemetry()
    app = web.Application()
    hub.add_routes(app)
    with caplog.at_level(logging.WARNING, logger="shoal.telemetry.ingest"):
        for batch in range(20):  # as a sidecar would send them: in batches
            hub.on_logs(invented_edges("mallory.default", 1000, start=batch * 1000))
        hub.on_logs(invented_edges("web.default", 3))  # an honest neighbour
    assert hub.aggregator.series == MAX_SERIES_PER_REPORTER + 3
    assert len(hub.store.edges()) == MAX_SERIES_PER_REPORTER + 3
    assert hub.aggregator.dropped == {"mallory.default": 19_000}
    warnings = [r for r in caplog.records if "series limit" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].reporter == "mallory.default"  # type: ignore[attr-defined]

    async with TestClient(TestServer(app)) as http:
        r = await http.get("/metrics")
        body = await r.read()
    # One series is ~28 lines (a request counter, three histograms) of ~400 bytes: the
    # cap keeps the scrape near 1,000 of them, not 20,000 (282 MB before).
    assert len(body) < 16 * 1024 * MAX_SERIES_PER_REPORTER + 100_000, len(body)
    text = body.decode()
    assert 'shoal_telemetry_dropped_series_total{reporter="mallory.default"} 19000.0' in text
    assert "shoal_telemetry_series 1003.0" in text
    assert text.count('source_workload="web"') > 0  # the neighbour still counts

    # existing series keep counting; only new ones are dropped
    hub.on_logs(invented_edges("mallory.default", 10))
    assert hub.aggregator.dropped == {"mallory.default": 19_000}
    assert hub.aggregator.series == MAX_SERIES_PER_REPORTER + 3


def test_mesh_wide_cap_and_bounded_drop_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    agg = EdgeAggregator(clock=lambda: 5.0, per_reporter=2, max_series=5)
    agg.add([entry(f"w{i}.default", f"s{j}") for i in range(3) for j in range(3)])
    assert agg.series == 5  # w0: 2, w1: 2, w2: 1, then the mesh is full
    assert agg.dropped == {"w0.default": 1, "w1.default": 1, "w2.default": 2}
    agg.add([entry("w0.default", "s0", kind="tcp")])  # TCP series count the same
    assert agg.series == 5 and agg.dropped["w0.default"] == 2

    monkeypatch.setattr(ingest, "MAX_DROP_REPORTERS", 2)
    agg = EdgeAggregator(clock=lambda: 5.0, per_reporter=0)
    agg.add([entry(f"w{i}.default", "s") for i in range(5)])
    assert agg.dropped == {"w0.default": 1, "w1.default": 1, "other": 3}
    assert MAX_DROP_REPORTERS >= 100


def test_sample_sums_only_its_own_edge() -> None:
    agg = EdgeAggregator(clock=lambda: 5.0)
    out = agg.add([entry("w.default", "a"), entry("w.default", "a"), entry("w.default", "b")])
    by = {s.edge.destination_service: s for s in out}
    assert by["a.default.svc.cluster.local"].requests_by_code == {200: 2}
    assert by["b.default.svc.cluster.local"].requests_by_code == {200: 1}
