"""Telemetry plugin: what every HTTP connection manager and TCP proxy gets for access
logs and tracing, and any cluster the telemetry sinks need.

Pure functions of the generation context; the listener builders call them.

* Access logs: one JSON line per request/connection on Envoy's stdout (the agent keeps
  it in ``<run dir>/envoy.log``) and the same fields streamed to the control plane with
  Envoy's OpenTelemetry access logger (OTLP ``LogsService/Export``).
* Tracing, when ``MeshConfig.trace_sampling`` is set (off by default, docs/adr/0031):
  Envoy's Zipkin tracer with ``USE_B3_WITH_W3C_PROPAGATION``: it continues a
  caller's trace from B3 (``x-b3-*`` or ``b3``) or, failing that, W3C ``traceparent``, and
  sends both on every upstream request. Spans (Zipkin v2 JSON) are POSTed to the control
  plane's agents' TLS listener (``POST /api/v2/spans``) over the ``shoal_zipkin``
  cluster generated here, to ``MeshConfig.trace_collector``, with mTLS: the workload
  certificate, the control plane verified against the mesh roots and by name (the
  receiver keeps only the spans of nodes that identity may speak for, docs/adr/0025).
  When that is ``""`` (no address the sidecars can reach is known), the OpenTelemetry
  tracer (W3C only) exports over ``xds_cluster``.

The access-log stream uses the bootstrap's ``xds_cluster``: the control plane serves its
OTLP receivers on the xDS gRPC port (docs/adr/0008-telemetry-collection.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    grpc_service_pb2,
    substitution_format_string_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from opentelemetry.proto.common.v1 import common_pb2

from shoal.netaddr import is_ip
from shoal.registry.snapshot import AccessLogMode
from shoal.telemetry import envoy_stats as es
from shoal.telemetry.model import Reporter
from shoal.xds.generate.protocol import HcmExtras, duration, pack
from shoal.xds.generate.tls import control_plane_tls, tls_socket
from shoal.xds.types import XDS_CLUSTER

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

CONTROL_PLANE_CLUSTER = XDS_CLUSTER  # the bootstrap's control-plane cluster
ACCESS_LOG_PATH = "/dev/stdout"
FILE_LOGGER = "envoy.access_loggers.file"
# Runtime key of the "errors" access-log threshold (default 400): an operator can lower it
# on one proxy through its admin runtime layer while debugging, without a config push.
ERRORS_KEY = "shoal.access_log.min_status"
OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
STATS_LOGGER = "envoy.access_loggers.stats"
OTEL_TRACER = "envoy.tracers.opentelemetry"
ZIPKIN_TRACER = "envoy.tracers.zipkin"
ZIPKIN_CLUSTER = "shoal_zipkin"
ZIPKIN_PATH = "/api/v2/spans"  # the control plane's Zipkin v2 receiver (shoal.telemetry.zipkin)
# Host header, SNI and the name the control plane's certificate must carry
# (shoal.ca.serving.SERVER_NAME, shoal.agent.bootstrap.CONTROL_PLANE_NAME)
COLLECTOR_HOST = "shoal-control-plane"
ZIPKIN_MTLS = "control-plane-mtls"
# MeshConfig.trace_collector None: the control plane's default agents' listener address
# (shoal.control.config.DEFAULT_AGENT_API_PORT); the control plane fills in its own.
DEFAULT_TRACE_COLLECTOR = "127.0.0.1:15443"
LOG_NAME = "shoal"  # OTLP resource attribute log_name; the CP checks it
TRACE_SERVICE_NAME = "shoal-sidecar"  # node identity travels in each span's node_id tag


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


# Access-log fields: name -> Envoy command operator. One table for the file and the stream.
HTTP_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "downstream_remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",
    "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
    "route_name": "%ROUTE_NAME%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
}
TCP_FIELDS: dict[str, str] = {
    key: HTTP_FIELDS[key] for key in (
        "start_time", "response_flags", "duration_ms", "bytes_received", "bytes_sent",
        "upstream_cluster", "upstream_host", "upstream_failure", "downstream_remote",
        "source_principal", "destination_principal")
}


def _errors_only() -> accesslog_pb2.AccessLogFilter:
    """A request that failed: status >= 400, any response flag (no healthy upstream,
    retries exhausted, rate limited, ...), or a gRPC call whose status is not OK. Each
    check is on values Envoy already has, so a successful request costs three compares,
    not a formatted line."""
    grpc_error = accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=[
        accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(
            header=route_pb2.HeaderMatcher(
                name="content-type",
                string_match=string_pb2.StringMatcher(prefix="application/grpc")))),
        accesslog_pb2.AccessLogFilter(grpc_status_filter=accesslog_pb2.GrpcStatusFilter(
            statuses=[accesslog_pb2.GrpcStatusFilter.OK], exclude=True)),
    ]))
    return accesslog_pb2.AccessLogFilter(or_filter=accesslog_pb2.OrFilter(filters=[
        accesslog_pb2.AccessLogFilter(status_code_filter=accesslog_pb2.StatusCodeFilter(
            comparison=accesslog_pb2.ComparisonFilter(
                op=accesslog_pb2.ComparisonFilter.GE,
                value=base_pb2.RuntimeUInt32(default_value=400, runtime_key=ERRORS_KEY)))),
        accesslog_pb2.AccessLogFilter(response_flag_filter=accesslog_pb2.ResponseFlagFilter()),
        grpc_error,
    ]))


def _file_log(fields: Mapping[str, str], direction: Direction, kind: str,
              errors_only: bool = False) -> accesslog_pb2.AccessLog:
    doc = struct_pb2.Struct()
    doc.update({"log": "access", "kind": kind, "direction": str(direction), **fields})
    fmt = substitution_format_string_pb2.SubstitutionFormatString(json_format=doc)
    out = accesslog_pb2.AccessLog(
        name=FILE_LOGGER,
        typed_config=pack(file_pb2.FileAccessLog(path=ACCESS_LOG_PATH, log_format=fmt)),
    )
    if errors_only:
        out.filter.CopyFrom(_errors_only())
    return out


def _control_plane() -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=CONTROL_PLANE_CLUSTER)
    )


def _otel_log(fields: Mapping[str, str], direction: Direction, kind: str
              ) -> accesslog_pb2.AccessLog:
    attrs = common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
        for k, v in {"kind": kind, "direction": str(direction), **fields}.items()
    ])
    config = logs_service_pb2.OpenTelemetryAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=LOG_NAME,
            grpc_service=_control_plane(),
            transport_api_version=2,  # V3
            buffer_flush_interval=duration(1.0),
        ),
        body=common_pb2.AnyValue(string_value=f"{kind} {direction}"),
        attributes=attrs,
    )
    return accesslog_pb2.AccessLog(name=OTEL_LOGGER, typed_config=pack(config))


# The stats logger's tags: Envoy command operators whose values are bounded by the mesh's
# config (clusters, codes, flags, verified identities), never by what a caller sends. The
# peer is the other side of the edge: the upstream for the source reporter (sidecars'
# outbound, gateways), the downstream for the destination reporter (sidecars' inbound).
_PEER = {Reporter.SOURCE: "%UPSTREAM_PEER_URI_SAN%",
         Reporter.DESTINATION: "%DOWNSTREAM_PEER_URI_SAN%"}
_REPORTER = {Direction.OUTBOUND: Reporter.SOURCE, Direction.INBOUND: Reporter.DESTINATION}


def _tag_values(reporter: Reporter) -> dict[str, str]:
    return {es.REPORTER: str(reporter), es.CLUSTER: "%UPSTREAM_CLUSTER%",
            es.CODE: "%RESPONSE_CODE%", es.FLAGS: "%RESPONSE_FLAGS%",
            es.PEER: _PEER[reporter], es.GRPC: "%GRPC_STATUS(NUMBER)%"}


def _stat(name: str, reporter: Reporter, tags: tuple[str, ...]) -> stats_pb2.Config.Stat:
    values = _tag_values(reporter)
    return stats_pb2.Config.Stat(name=name, tags=[
        stats_pb2.Config.Tag(name=t, value_format=values[t]) for t in tags])


def _stats_log(reporter: Reporter, kind: str) -> accesslog_pb2.AccessLog:
    """Per-edge counters and the duration histogram in Envoy's own stats
    (shoal.telemetry.envoy_stats; docs/adr/0027-metrics-from-envoy-stats.md)."""
    if kind == "tcp":
        tags = es.TCP_TAGS
        config = stats_pb2.Config(stat_prefix=es.PREFIX, counters=[
            stats_pb2.Config.Counter(stat=_stat(es.TCP_CONNECTIONS, reporter, tags),
                                     value_fixed=wrappers_pb2.UInt64Value(value=1)),
            stats_pb2.Config.Counter(stat=_stat(es.TCP_SENT, reporter, tags),
                                     value_format="%BYTES_RECEIVED%"),
            stats_pb2.Config.Counter(stat=_stat(es.TCP_RECEIVED, reporter, tags),
                                     value_format="%BYTES_SENT%"),
        ])
    else:
        tags = es.HTTP_TAGS
        config = stats_pb2.Config(
            stat_prefix=es.PREFIX,
            counters=[
                stats_pb2.Config.Counter(stat=_stat(es.REQUESTS, reporter, tags),
                                         value_fixed=wrappers_pb2.UInt64Value(value=1)),
                stats_pb2.Config.Counter(stat=_stat(es.REQUEST_BYTES, reporter, tags),
                                         value_format="%BYTES_RECEIVED%"),
                stats_pb2.Config.Counter(stat=_stat(es.RESPONSE_BYTES, reporter, tags),
                                         value_format="%BYTES_SENT%"),
            ],
            histograms=[stats_pb2.Config.Histogram(
                stat=_stat(es.DURATION, reporter, tags),
                unit=stats_pb2.Config.Histogram.Milliseconds, value_format="%DURATION%")],
        )
    return accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=pack(config))


@cache
def _http_logs(direction: Direction, reporter: Reporter, stream: bool, mode: AccessLogMode
               ) -> tuple[accesslog_pb2.AccessLog, ...]:
    logs = [_stats_log(reporter, "http")]
    if mode != AccessLogMode.OFF:
        logs.append(_file_log(HTTP_FIELDS, direction, "http",
                              errors_only=mode == AccessLogMode.ERRORS))
    if stream:
        logs.append(_otel_log(HTTP_FIELDS, direction, "http"))
    return tuple(logs)


@cache
def _tcp_logs(direction: Direction, stream: bool) -> tuple[accesslog_pb2.AccessLog, ...]:
    logs = [_stats_log(_REPORTER[direction], "tcp"), _file_log(TCP_FIELDS, direction, "tcp")]
    if stream:
        logs.append(_otel_log(TCP_FIELDS, direction, "tcp"))
    return tuple(logs)


@cache
def _tracing(sampling: float, zipkin: bool) -> hcm_pb2.HttpConnectionManager.Tracing:
    if zipkin:
        tracer = zipkin_pb2.ZipkinConfig(
            collector_cluster=ZIPKIN_CLUSTER,
            collector_endpoint=ZIPKIN_PATH,
            collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
            # A constant Host header: the tracing config (in every HCM) must not depend on
            # which control-plane instance generated it, or a sidecar failing over to
            # another instance would get new listeners and drain its connections. The
            # instance's address lives only in the shoal_zipkin cluster.
            collector_hostname=COLLECTOR_HOST,
            trace_id_128bit=True,
            # a new span id per hop (parent = the caller's span), not Zipkin's shared
            # client/server span: every sidecar span is its own record, as with OTLP
            shared_span_context=wrappers_pb2.BoolValue(value=False),
            trace_context_option=zipkin_pb2.ZipkinConfig.USE_B3_WITH_W3C_PROPAGATION,
        )
        provider = http_tracer_pb2.Tracing.Http(name=ZIPKIN_TRACER, typed_config=pack(tracer))
    else:
        otel = opentelemetry_pb2.OpenTelemetryConfig(
            grpc_service=_control_plane(), service_name=TRACE_SERVICE_NAME
        )
        provider = http_tracer_pb2.Tracing.Http(name=OTEL_TRACER, typed_config=pack(otel))
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=sampling), provider=provider)


def trace_sampling(ctx: GenerationContext) -> float | None:
    """Percent of new traces sampled (MeshConfig ``trace_sampling``); None: no tracer in
    the sidecars (the default, docs/adr/0031)."""
    value = getattr(ctx.mesh.config, "trace_sampling", None)
    return None if value is None else min(100.0, max(0.0, float(value)))


def trace_collector(ctx: GenerationContext) -> str:
    """HOST:PORT the sidecars POST Zipkin spans to; "" for the OpenTelemetry fallback."""
    value = getattr(ctx.mesh.config, "trace_collector", None)
    return DEFAULT_TRACE_COLLECTOR if value is None else value


def access_log_stream(ctx: GenerationContext) -> bool:
    """Do sidecars stream every access-log entry to the control plane (OTLP)? Off by
    default: metrics come from Envoy's own counters (docs/adr/0027)."""
    return bool(getattr(ctx.mesh.config, "access_log_stream", False))


def access_log_mode(ctx: GenerationContext) -> AccessLogMode:
    """Which requests go to the sidecars' local access log (MeshConfig ``access_log``)."""
    return AccessLogMode(getattr(ctx.mesh.config, "access_log", AccessLogMode.ERRORS))


def http_extras(ctx: GenerationContext, direction: Direction,
                reporter: Reporter | None = None) -> HcmExtras:
    """Access logs, per-edge stats and tracing for an HTTP listener of this direction.
    ``reporter``: who counts its requests (default: the source outbound, the destination
    inbound; a gateway's listeners take traffic in but report as the source, as Istio's
    gateways do: the destination is the service they route to)."""
    return HcmExtras(access_log=_http_logs(direction, reporter or _REPORTER[direction],
                                           access_log_stream(ctx), access_log_mode(ctx)),
                     tracing=None if (sampling := trace_sampling(ctx)) is None
                     else _tracing(sampling, bool(trace_collector(ctx))))


def tcp_access_log(ctx: GenerationContext, direction: Direction
                   ) -> tuple[accesslog_pb2.AccessLog, ...]:
    return _tcp_logs(direction, access_log_stream(ctx))


def clusters(ctx: GenerationContext) -> Mapping[str, cluster_pb2.Cluster]:
    """Clusters the telemetry sinks need: ``shoal_zipkin`` (HTTP/1.1 over mTLS) to the
    control plane's agents' listener for spans; access logs use the bootstrap's
    ``xds_cluster``."""
    collector = trace_collector(ctx)
    tracing = trace_sampling(ctx) is not None
    return {ZIPKIN_CLUSTER: _zipkin_cluster(collector)} if tracing and collector else {}


@cache
def _zipkin_cluster(collector: str) -> cluster_pb2.Cluster:
    host, _, port = collector.rpartition(":")
    host = host.strip("[]")
    kind = cluster_pb2.Cluster.STATIC if is_ip(host) else cluster_pb2.Cluster.STRICT_DNS
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(
        address=host, port_value=int(port)))
    return cluster_pb2.Cluster(
        name=ZIPKIN_CLUSTER,
        type=kind,
        connect_timeout=duration(1.0),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=ZIPKIN_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=address))])]),
        # mTLS to every endpoint (an empty match matches all). A transport socket *match*
        # rather than ``transport_socket``: a proxy without a mesh identity gets the
        # cluster without its matches (GenerationContext.without_mtls), instead of one
        # that waits for a certificate it will never have; its spans are refused anyway.
        transport_socket_matches=[cluster_pb2.Cluster.TransportSocketMatch(
            name=ZIPKIN_MTLS, match=struct_pb2.Struct(),
            transport_socket=tls_socket(control_plane_tls(COLLECTOR_HOST)))],
    )
