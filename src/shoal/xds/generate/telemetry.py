"""Telemetry plugin: what every HTTP connection manager and TCP proxy gets for access
logs and tracing, and any cluster the telemetry sinks need.

Pure functions of the generation context; the listener builders call them.

* Access logs: one JSON line per request/connection on Envoy's stdout (the agent keeps
  it in ``<run dir>/envoy.log``) and the same fields streamed to the control plane with
  Envoy's OpenTelemetry access logger (OTLP ``LogsService/Export``).
* Tracing: Envoy's OpenTelemetry tracer (W3C ``traceparent``), spans exported over OTLP
  ``TraceService/Export`` to the control plane.

Both streams use the bootstrap's ``xds_cluster``: the control plane serves its OTLP
receivers on the xDS gRPC port (docs/adr/0008-telemetry-collection.md), so no address
has to be generated and the connection gets whatever transport security xDS has.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import grpc_service_pb2, substitution_format_string_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2
from opentelemetry.proto.common.v1 import common_pb2

from shoal.xds.generate.protocol import HcmExtras, duration, pack

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

# The bootstrap's control-plane cluster (shoal.agent.bootstrap.XDS_CLUSTER).
CONTROL_PLANE_CLUSTER = "xds_cluster"
ACCESS_LOG_PATH = "/dev/stdout"
FILE_LOGGER = "envoy.access_loggers.file"
OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
OTEL_TRACER = "envoy.tracers.opentelemetry"
LOG_NAME = "shoal"  # OTLP resource attribute log_name; the CP checks it
TRACE_SERVICE_NAME = "shoal-sidecar"  # node identity travels in each span's node_id tag
DEFAULT_TRACE_SAMPLING = 100.0


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


def _file_log(fields: Mapping[str, str], direction: Direction, kind: str
              ) -> accesslog_pb2.AccessLog:
    doc = struct_pb2.Struct()
    doc.update({"log": "access", "kind": kind, "direction": str(direction), **fields})
    fmt = substitution_format_string_pb2.SubstitutionFormatString(json_format=doc)
    return accesslog_pb2.AccessLog(
        name=FILE_LOGGER,
        typed_config=pack(file_pb2.FileAccessLog(path=ACCESS_LOG_PATH, log_format=fmt)),
    )


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


@cache
def _http_logs(direction: Direction) -> tuple[accesslog_pb2.AccessLog, ...]:
    return (_file_log(HTTP_FIELDS, direction, "http"), _otel_log(HTTP_FIELDS, direction, "http"))


@cache
def _tcp_logs(direction: Direction) -> tuple[accesslog_pb2.AccessLog, ...]:
    return (_file_log(TCP_FIELDS, direction, "tcp"), _otel_log(TCP_FIELDS, direction, "tcp"))


@cache
def _tracing(sampling: float) -> hcm_pb2.HttpConnectionManager.Tracing:
    tracer = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=_control_plane(), service_name=TRACE_SERVICE_NAME
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=sampling),
        provider=http_tracer_pb2.Tracing.Http(name=OTEL_TRACER, typed_config=pack(tracer)),
    )


def trace_sampling(ctx: GenerationContext) -> float:
    """Percent of new traces sampled (MeshConfig ``trace_sampling``; 100 by default)."""
    value = getattr(ctx.mesh.config, "trace_sampling", DEFAULT_TRACE_SAMPLING)
    return min(100.0, max(0.0, float(value)))


def http_extras(ctx: GenerationContext, direction: Direction) -> HcmExtras:
    """Access logs and tracing for an HTTP listener of this direction."""
    return HcmExtras(access_log=_http_logs(direction), tracing=_tracing(trace_sampling(ctx)))


def tcp_access_log(ctx: GenerationContext, direction: Direction
                   ) -> tuple[accesslog_pb2.AccessLog, ...]:
    return _tcp_logs(direction)


def clusters(ctx: GenerationContext) -> Mapping[str, cluster_pb2.Cluster]:
    """Clusters the telemetry sinks need: none, they use the bootstrap's ``xds_cluster``."""
    return {}
