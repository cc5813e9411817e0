"""Exact per-edge counts in /metrics, edge rates and access-log lines, from real Envoys."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.testing.local import wait_for
from tests.telemetry.conftest import Mesh

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
ECHO = "echo.default.svc.cluster.local"
CLUSTER = f"outbound|8080||{ECHO}"


def requests_by_code(mesh: Mesh) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(mesh.metrics_text()):
        if fam.name != "istio_requests":
            continue
        for s in fam.samples:
            if (s.name == "istio_requests_total" and s.labels["destination_service"] == ECHO
                    and s.labels["source_workload"] == "client"
                    and s.labels["reporter"] == "source"):
                code = s.labels["response_code"]
                out[code] = out.get(code, 0) + s.value
    return out


def warmed_up(mesh: Mesh) -> None:
    """Every request sent so far is counted in the control plane's /metrics."""
    mesh.settled(CLUSTER, lambda: sum(requests_by_code(mesh).values()))


def test_counts_per_edge_and_code_are_exact(mesh: Mesh) -> None:
    warmed_up(mesh)
    before = requests_by_code(mesh)
    with httpx.Client(proxy=mesh.proxy, timeout=10) as http:
        for i in range(10):
            status = "503" if i % 4 == 3 or i == 9 else "200"  # 7 x 200, 3 x 503
            r = http.get(f"http://echo:8080/count/{i}", headers={"x-echo-status": status})
            assert r.status_code == int(status)
    want = {"200": 7.0, "503": 3.0}

    def delta() -> dict[str, float]:
        after = requests_by_code(mesh)
        return {c: after.get(c, 0) - before.get(c, 0) for c in after
                if after.get(c, 0) != before.get(c, 0)}

    wait_for(lambda: sum(delta().values()) >= 10, 30, "10 requests in /metrics")
    assert delta() == want  # 503s are retried by the sidecar, yet count once each

    text = mesh.metrics_text()
    assert 'connection_security_policy="none"' in text or "mutual_tls" in text
    assert "istio_request_duration_milliseconds_bucket" in text
    assert "shoal_xds_connected_proxies" in text


def test_latency_buckets_are_cumulative_and_sane(mesh: Mesh) -> None:
    warmed_up(mesh)
    for fam in text_string_to_metric_families(mesh.metrics_text()):
        if fam.name != "istio_request_duration_milliseconds":
            continue
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                counts[key] = s.value
        assert series
        for key, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            assert values == sorted(values)  # cumulative
            assert values[-1] == counts[key]  # +Inf == count
            # loopback requests to a local echo finish within a second
            le_1s = dict(sorted(buckets))[1000.0]
            assert le_1s == counts[key]


def test_edge_rates_api(mesh: Mesh) -> None:
    warmed_up(mesh)
    edges = mesh.get("/api/v1/metrics/edges", params={"window": 600})["edges"]
    mine = [e for e in edges if e["edge"]["destination_service"] == ECHO
            and e["edge"]["source_workload"] == "client"]
    assert mine and mine[0]["requests"] >= 1
    assert mine[0]["edge"]["destination_port"] == 8080
    assert mine[0]["p50_ms"] is not None


def test_access_log_of_a_failed_request_has_status_and_flags(mesh: Mesh) -> None:
    with httpx.Client(proxy=mesh.proxy, timeout=10) as http:
        r = http.get("http://echo:8080/denied", headers={"x-echo-status": "503"})
        assert r.status_code == 503
    entry = wait_for(lambda: next((e for e in mesh.get(
        "/api/v1/logs", params={"service": "client", "tail": 1000})["entries"]
        if e.get("path") == "/denied"), None), 30, "the access log of /denied")
    assert entry["status"] == 503
    assert entry["response_flags"] == "URX"  # retries on 503 exhausted
    assert entry["direction"] == "outbound" and entry["source_workload"] == "client"
    assert entry["destination_service"] == ECHO
    assert entry["upstream_cluster"] == f"outbound|8080||{ECHO}"
    # no tracer by default (docs/adr/0031): the field is there, empty
    assert entry["request_id"] and entry["trace_id"] == ""
    # the server's sidecar logged the same request (same request id) on its side
    # (1 + 2 retries; they can arrive in different batches of the stream)
    inbound = wait_for(lambda: len(got := [e for e in mesh.get(
        "/api/v1/logs", params={"service": "echo", "tail": 1000})["entries"]
        if e.get("request_id") == entry["request_id"]]) >= 3 and got, 30,
        "the three inbound entries")
    assert len(inbound) == 3 and all(e["status"] == 503 for e in inbound)
