"""OTLP/gRPC receivers (LogsService, TraceService) served on the control plane's gRPC
server, and an optional forwarder of spans to any OTLP endpoint.

The receivers hand each request on with its caller (:class:`~shoal.xds.server.peer.Peer`,
from the client certificate on the secure port); a handler that refuses the caller raises
Unauthenticated / PermissionDenied, answered with that gRPC status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from shoal.errors import PermissionDenied, Unauthenticated
from shoal.xds.server import grpc_code
from shoal.xds.server.peer import Peer, peer_of

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
TRACE_EXPORT = f"/{TRACE_SERVICE}/Export"

LogsHandler = Callable[[logs_service_pb2.ExportLogsServiceRequest, Peer], None]
TraceHandler = Callable[[trace_service_pb2.ExportTraceServiceRequest, Peer], None]


def otlp_handlers(on_logs: LogsHandler, on_traces: TraceHandler
                  ) -> list[grpc.GenericRpcHandler]:
    async def export_logs(req: logs_service_pb2.ExportLogsServiceRequest,
                          context: grpc.aio.ServicerContext
                          ) -> logs_service_pb2.ExportLogsServiceResponse:
        try:
            on_logs(req, peer_of(context))
        except (Unauthenticated, PermissionDenied) as e:
            await context.abort(grpc_code(e), str(e))
        return logs_service_pb2.ExportLogsServiceResponse()

    async def export_traces(req: trace_service_pb2.ExportTraceServiceRequest,
                            context: grpc.aio.ServicerContext
                            ) -> trace_service_pb2.ExportTraceServiceResponse:
        try:
            on_traces(req, peer_of(context))
        except (Unauthenticated, PermissionDenied) as e:
            await context.abort(grpc_code(e), str(e))
        return trace_service_pb2.ExportTraceServiceResponse()

    return [
        grpc.method_handlers_generic_handler(LOGS_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                export_logs,
                request_deserializer=logs_service_pb2.ExportLogsServiceRequest.FromString,
                response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString,
            )}),
        grpc.method_handlers_generic_handler(TRACE_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                export_traces,
                request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
            )}),
    ]


class TraceForwarder:
    """Sends what the sidecars export on to another OTLP/gRPC collector (best effort:
    a bounded queue; when it is full or the collector is down, batches are dropped)."""

    def __init__(self, target: str, *, queue_size: int = 1000) -> None:
        self.target = target
        self.dropped = 0
        self.sent = 0
        self._queue: asyncio.Queue[trace_service_pb2.ExportTraceServiceRequest] = \
            asyncio.Queue(queue_size)

    def submit(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        try:
            self._queue.put_nowait(req)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            export = channel.unary_unary(
                TRACE_EXPORT,
                request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
                response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
            )
            while True:
                req = await self._queue.get()
                try:
                    await export(req, timeout=5.0)
                    self.sent += 1
                except grpc.aio.AioRpcError as e:
                    self.dropped += 1
                    log.warning("otlp export failed", extra={
                        "target": self.target, "code": str(e.code())})
