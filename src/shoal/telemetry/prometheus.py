"""Prometheus exposition of the mesh's metrics with Istio's standard names and labels,
plus control-plane metrics, via a prometheus-client custom collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from shoal.telemetry.ingest import EdgeAggregator, RequestKey
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge

REQUEST_LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_canonical_service",
    "source_canonical_revision", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_workload", "destination_version",
    "destination_port", "response_code", "response_flags", "connection_security_policy",
    "request_protocol",
)
TCP_LABELS = tuple(x for x in REQUEST_LABELS if x not in ("response_code", "response_flags"))


def _edge_labels(edge: Edge) -> dict[str, str]:
    name = edge.destination_service.split(".")[0]
    return {
        "reporter": "source",
        "source_workload": edge.source_workload or "unknown",
        "source_workload_namespace": edge.source_namespace or "unknown",
        "source_canonical_service": edge.source_service or "unknown",
        "source_canonical_revision": "latest",
        "destination_service": edge.destination_service,
        "destination_service_name": name,
        "destination_service_namespace": edge.destination_namespace or "unknown",
        "destination_workload": "unknown",
        "destination_version": edge.destination_subset or "unknown",
        "destination_port": str(edge.destination_port),
        "connection_security_policy": "mutual_tls" if edge.mtls else "none",
        "request_protocol": edge.protocol,
    }


def _request_labels(key: RequestKey) -> list[str]:
    labels = _edge_labels(key.edge)
    labels["response_code"] = str(key.code)
    labels["response_flags"] = key.flags
    return [labels[k] for k in REQUEST_LABELS]


def _buckets(cumulative: list[int], total: int) -> list[tuple[str, float]]:
    out = [(f"{b:g}", float(n)) for b, n in zip(LATENCY_BUCKETS_MS, cumulative, strict=True)]
    return [*out, ("+Inf", float(total))]


class MeshCollector(Collector):
    def __init__(self, metrics: EdgeAggregator,
                 control_plane: Callable[[], dict[str, Any]] = dict) -> None:
        self._metrics = metrics
        self._control_plane = control_plane

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("istio_requests_total", "Requests, by edge and code",
                                       labels=REQUEST_LABELS)
        duration = HistogramMetricFamily("istio_request_duration_milliseconds",
                                         "Request duration (ms)", labels=REQUEST_LABELS)
        req_bytes = HistogramMetricFamily("istio_request_bytes", "Request bytes",
                                          labels=REQUEST_LABELS)
        resp_bytes = HistogramMetricFamily("istio_response_bytes", "Response bytes",
                                           labels=REQUEST_LABELS)
        for key, c in sorted(self._metrics.requests.items(), key=lambda kv: repr(kv[0])):
            labels = _request_labels(key)
            requests.add_metric(labels, c.requests)
            duration.add_metric(labels, _buckets(c.buckets, c.requests), c.latency_sum_ms)
            req_bytes.add_metric(labels, [("+Inf", float(c.requests))], c.request_bytes)
            resp_bytes.add_metric(labels, [("+Inf", float(c.requests))], c.response_bytes)
        yield from (requests, duration, req_bytes, resp_bytes)
        tcp = {
            "opened": CounterMetricFamily("istio_tcp_connections_opened", "TCP connections opened",
                                          labels=TCP_LABELS),
            "closed": CounterMetricFamily("istio_tcp_connections_closed", "TCP connections closed",
                                          labels=TCP_LABELS),
            "sent": CounterMetricFamily("istio_tcp_sent_bytes", "Bytes sent upstream",
                                        labels=TCP_LABELS),
            "received": CounterMetricFamily("istio_tcp_received_bytes",
                                            "Bytes received from upstream", labels=TCP_LABELS),
        }
        for edge, t in self._metrics.tcp.items():
            el = _edge_labels(edge)
            labels = [el[k] for k in TCP_LABELS]
            for name, fam in tcp.items():
                fam.add_metric(labels, getattr(t, name))
        yield from tcp.values()
        dropped = CounterMetricFamily(
            "shoal_telemetry_dropped_series",
            "Access-log entries not counted: they would have created a series beyond the "
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
