"""Prometheus exposition of the mesh's metrics with Istio's standard names and labels,
plus control-plane metrics, via a prometheus-client custom collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from shoal.telemetry.ingest import Node, ProxyCounters
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, Reporter
from shoal.telemetry.report import TcpRow

REQUEST_LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal",
    "source_canonical_service", "source_canonical_revision", "destination_service",
    "destination_service_name", "destination_service_namespace", "destination_workload",
    "destination_workload_namespace", "destination_principal", "destination_version",
    "destination_port", "response_code", "response_flags", "grpc_response_status",
    "connection_security_policy", "request_protocol",
)
TCP_LABELS = tuple(x for x in REQUEST_LABELS
                   if x not in ("response_code", "grpc_response_status"))
_UNKNOWN = "unknown"


def _edge_labels(node: Node, edge: Edge, peer: str) -> dict[str, str]:
    name = edge.destination_service.split(".")[0]
    source = edge.reporter is Reporter.SOURCE
    me = node.identity
    return {
        "reporter": str(edge.reporter),
        "source_workload": edge.source_workload or _UNKNOWN,
        "source_workload_namespace": edge.source_namespace or _UNKNOWN,
        "source_principal": (node.principal if source else peer) or _UNKNOWN,
        "source_canonical_service": edge.source_service or _UNKNOWN,
        "source_canonical_revision": "latest",
        "destination_service": edge.destination_service,
        "destination_service_name": name,
        "destination_service_namespace": edge.destination_namespace or _UNKNOWN,
        "destination_workload": _UNKNOWN if source else me.workload,
        "destination_workload_namespace": _UNKNOWN if source else me.namespace,
        "destination_principal": (peer if source else node.principal) or _UNKNOWN,
        "destination_version": edge.destination_subset or _UNKNOWN,
        "destination_port": str(edge.destination_port),
        "connection_security_policy": str(edge.security),
        "request_protocol": edge.protocol,
    }


@dataclass
class _Requests:
    requests: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0


def _buckets(cumulative: list[int]) -> list[tuple[str, float]]:
    out = [(f"{b:g}", float(n)) for b, n in zip(LATENCY_BUCKETS_MS, cumulative, strict=False)]
    return [*out, ("+Inf", float(cumulative[-1]))]


class MeshCollector(Collector):
    """Every proxy's latest rows with Istio's metric names and labels; rows whose labels
    coincide (e.g. several clusters that are not services) are summed."""

    def __init__(self, metrics: ProxyCounters,
                 control_plane: Callable[[], dict[str, Any]] = dict) -> None:
        self._metrics = metrics
        self._control_plane = control_plane

    def _sums(self) -> tuple[dict[tuple[str, ...], _Requests],
                             dict[tuple[str, ...], list[int]]]:
        requests: dict[tuple[str, ...], _Requests] = {}
        tcp: dict[tuple[str, ...], list[int]] = {}
        for node, edge, row in self._metrics.rows():
            labels = _edge_labels(node, edge, row.peer)
            labels["response_flags"] = row.flags or "-"
            if isinstance(row, TcpRow):
                t = tcp.setdefault(tuple(labels[k] for k in TCP_LABELS), [0, 0, 0])
                t[0] += row.connections
                t[1] += row.sent_bytes
                t[2] += row.received_bytes
                continue
            labels["response_code"] = str(row.code)
            labels["grpc_response_status"] = row.grpc
            r = requests.setdefault(tuple(labels[k] for k in REQUEST_LABELS), _Requests())
            r.requests += row.requests
            r.buckets = [a + b for a, b in zip(r.buckets, row.duration_buckets, strict=True)]
            r.latency_sum_ms += row.duration_sum_ms
            r.request_bytes += row.request_bytes
            r.response_bytes += row.response_bytes
        return requests, tcp

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("istio_requests_total", "Requests, by edge and code",
                                       labels=REQUEST_LABELS)
        duration = HistogramMetricFamily("istio_request_duration_milliseconds",
                                         "Request duration (ms)", labels=REQUEST_LABELS)
        req_bytes = HistogramMetricFamily("istio_request_bytes", "Request bytes",
                                          labels=REQUEST_LABELS)
        resp_bytes = HistogramMetricFamily("istio_response_bytes", "Response bytes",
                                           labels=REQUEST_LABELS)
        http, tcp_sums = self._sums()
        for labels, r in sorted(http.items()):
            values = list(labels)
            requests.add_metric(values, r.requests)
            duration.add_metric(values, _buckets(r.buckets), r.latency_sum_ms)
            req_bytes.add_metric(values, [("+Inf", float(r.requests))], r.request_bytes)
            resp_bytes.add_metric(values, [("+Inf", float(r.requests))], r.response_bytes)
        yield from (requests, duration, req_bytes, resp_bytes)
        tcp = (
            CounterMetricFamily("istio_tcp_connections_opened", "TCP connections opened",
                                labels=TCP_LABELS),
            CounterMetricFamily("istio_tcp_connections_closed", "TCP connections closed",
                                labels=TCP_LABELS),
            CounterMetricFamily("istio_tcp_sent_bytes", "Bytes sent upstream",
                                labels=TCP_LABELS),
            CounterMetricFamily("istio_tcp_received_bytes", "Bytes received from upstream",
                                labels=TCP_LABELS),
        )
        for labels, (conns, sent, received) in sorted(tcp_sums.items()):
            values = list(labels)
            for fam, n in zip(tcp, (conns, conns, sent, received), strict=True):
                fam.add_metric(values, n)
        yield from tcp
        dropped = CounterMetricFamily(
            "shoal_telemetry_dropped_series",
            "Stats rows not kept: they would have created a series beyond the "
            "reporter's or the mesh's limit", labels=["reporter"])
        for reporter, n in sorted(self._metrics.dropped.items()):
            dropped.add_metric([reporter], n)
        yield dropped
        series = GaugeMetricFamily("shoal_telemetry_series", "Request and TCP series kept")
        series.add_metric([], self._metrics.series)
        yield series
        yield from control_plane_metrics(self._control_plane())


def control_plane_metrics(cp: dict[str, Any]) -> Iterator[Metric]:
    proxies = cp.get("proxies", [])
    connected = GaugeMetricFamily("shoal_xds_connected_proxies", "Proxies with an ADS stream",
                                  labels=["sync"])
    by_sync: dict[str, int] = {}
    for p in proxies:
        if p.get("connected", True):
            by_sync[str(p.get("sync", ""))] = by_sync.get(str(p.get("sync", "")), 0) + 1
    for state, n in sorted(by_sync.items()):
        connected.add_metric([state], n)
    yield connected
    nacks = GaugeMetricFamily("shoal_xds_nacked_types", "xDS types whose last push was NACKed",
                              labels=["type"])
    pushes = CounterMetricFamily("shoal_xds_acked_pushes", "Proxies x types at an ACKed version",
                                 labels=["type"])
    n_by: dict[str, int] = {}
    a_by: dict[str, int] = {}
    for p in proxies:
        for t in p.get("types", []):
            kind = str(t.get("type", ""))
            n_by[kind] = n_by.get(kind, 0) + (1 if t.get("nack") else 0)
            a_by[kind] = a_by.get(kind, 0) + (1 if t.get("acked_version") else 0)
    for kind in sorted(n_by):
        nacks.add_metric([kind], n_by[kind])
        pushes.add_metric([kind], a_by[kind])
    yield nacks
    yield pushes
    for name, help_text in (("access_log_entries", "Access-log entries received"),
                            ("stats_reports", "Proxies' stats reports taken"),
                            ("refused_stats_reports", "Proxies' stats reports refused "
                                                      "(malformed, too large, not the "
                                                      "sender's node)"),
                            ("spans", "Spans received"),
                            ("dropped_spans", "Zipkin spans dropped: their reporter was "
                                              "not the poster's identity"),
                            ("otlp_forward_dropped", "Span batches not forwarded")):
        fam = CounterMetricFamily(f"shoal_telemetry_{name}", help_text)
        fam.add_metric([], float(cp.get(name, 0)))
        yield fam


def registry(collector: MeshCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def scrape_config(api_url: str, *, interval: str = "5s", job: str = "shoal",
                  credentials_file: str | None = None) -> str:
    """Prometheus ``scrape_configs`` YAML for the control plane at ``api_url``; the
    bearer token Prometheus presents is read from ``credentials_file``."""
    scheme, _, rest = api_url.partition("://")
    if not rest:
        scheme, rest = "http", api_url
    target = rest.split("/")[0]
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    scheme: {scheme}\n"
        "    metrics_path: /metrics\n"
        "    honor_labels: true\n"
        + (("    authorization:\n      type: Bearer\n"
            f"      credentials_file: '{credentials_file}'\n") if credentials_file else "")
        + "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
