"""Zipkin v2 receiver: ``POST /api/v2/spans`` (a JSON list of spans, what Envoy's Zipkin
tracer sends with ``collector_endpoint_version: HTTP_JSON``).

Spans are converted to one OTLP ``ExportTraceServiceRequest`` (one resource per
``localEndpoint.serviceName``), so the trace store and the ``--otlp-export`` forwarder see
the same thing whichever tracer a sidecar runs (docs/adr/0008-telemetry-collection.md).

Who posts (docs/adr/0025): sidecars, on the agents' TLS listener with their workload
certificate (:func:`request_peer`: its SPIFFE ID; no certificate, 401); the receiver
keeps only the spans whose reporter (the ``node_id`` tag) that identity may speak for.
On the operator listener the route needs an operator credential (the middleware's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from shoal.api.limits import MAX_SPANS_BODY_BYTES, loads_json
from shoal.ca.peer_cert import request_peer as peer_certificate
from shoal.control.errors import error_response, read_body
from shoal.errors import PermissionDenied, Unauthenticated, ValidationError
from shoal.telemetry.traces import Span, make_span
from shoal.xds.server.peer import Peer

SPANS_PATH = "/api/v2/spans"
KINDS = {"SERVER": trace_pb2.Span.SPAN_KIND_SERVER, "CLIENT": trace_pb2.Span.SPAN_KIND_CLIENT,
         "PRODUCER": trace_pb2.Span.SPAN_KIND_PRODUCER,
         "CONSUMER": trace_pb2.Span.SPAN_KIND_CONSUMER}
# Zipkin's kind -> the trace store's (shoal.telemetry.traces.KINDS of the OTLP kind)
STORED_KINDS = {"SERVER": "server", "CLIENT": "client", "PRODUCER": "unspecified",
                "CONSUMER": "unspecified"}
MAX_SPANS = 10_000  # per request
# ResourceSpans' list of spans: scope_spans, instrumentation_library_spans before proto 0.15
SCOPE_SPANS = next(f for f in ("scope_spans", "instrumentation_library_spans")
                   if f in trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name)


class InvalidSpans(ValueError):
    pass


def _hex_id(text: Any, size: int, name: str, *, required: bool = True) -> bytes:
    """A Zipkin hex id as OTLP bytes: 64-bit trace ids are left-padded to 128 bits."""
    if text in (None, "") and not required:
        return b""
    if not isinstance(text, str) or not 0 < len(text) <= size * 2:
        raise InvalidSpans(f"{name} must be 1..{size * 2} hex digits")
    try:
        value = bytes.fromhex(text.rjust(size * 2, "0"))
    except ValueError:
        raise InvalidSpans(f"{name} must be hex") from None
    if not any(value):
        raise InvalidSpans(f"{name} must not be zero")
    return value


MAX_MICROS = (2**64 - 1) // 1000  # OTLP keeps nanoseconds in a fixed64


def _micros(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not \
            0 <= value <= MAX_MICROS:
        raise InvalidSpans(f"{name} must be a number of microseconds in 0..{MAX_MICROS}")
    return int(value)


def _kv(key: str, value: Any) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=str(value)))


@dataclass(frozen=True)
class _Checked:
    """One Zipkin v2 span, validated."""

    service: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: str  # Zipkin's, upper case
    start_us: int
    length_us: int
    tags: dict[Any, Any]
    annotations: list[tuple[str, int]]


def _check(span: Any) -> _Checked:
    if not isinstance(span, dict):
        raise InvalidSpans("a span must be an object")
    tags = span.get("tags") or {}
    endpoint = span.get("localEndpoint") or {}
    if not isinstance(tags, dict) or not isinstance(endpoint, dict):
        raise InvalidSpans("tags and localEndpoint must be objects")
    start = _micros(span.get("timestamp", 0), "timestamp")
    length = _micros(span.get("duration", 0), "duration")
    if start + length > MAX_MICROS:
        raise InvalidSpans("timestamp + duration is past the end of time (2^64 ns)")
    trace_id = _hex_id(span.get("traceId"), 16, "traceId")
    span_id = _hex_id(span.get("id"), 8, "id")
    parent = _hex_id(span.get("parentId"), 8, "parentId", required=False)
    annotations = span.get("annotations") or []
    if not isinstance(annotations, list):
        raise InvalidSpans("annotations must be a list")
    notes = [(str(n["value"]), _micros(n.get("timestamp", 0), "timestamp"))
             for n in annotations if isinstance(n, dict) and "value" in n]
    return _Checked(
        service=str(endpoint.get("serviceName") or ""), trace_id=trace_id, span_id=span_id,
        parent_span_id=parent, name=str(span.get("name") or ""),
        kind=str(span.get("kind", "")).upper(), start_us=start, length_us=length,
        tags=tags, annotations=notes)


def otlp_span(span: Any) -> tuple[str, trace_pb2.Span]:
    """One Zipkin v2 span (a decoded JSON object) -> (service name, OTLP span)."""
    c = _check(span)
    out = trace_pb2.Span(
        trace_id=c.trace_id, span_id=c.span_id, parent_span_id=c.parent_span_id,
        name=c.name, kind=KINDS.get(c.kind, trace_pb2.Span.SPAN_KIND_INTERNAL),
        start_time_unix_nano=c.start_us * 1000,
        end_time_unix_nano=(c.start_us + c.length_us) * 1000,
        attributes=[_kv(str(k), v) for k, v in c.tags.items()],
    )
    for value, at in c.annotations:
        out.events.add(name=value, time_unix_nano=at * 1000)
    if "error" in c.tags:
        out.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        out.status.message = str(c.tags["error"])
    return c.service, out


def stored_spans(spans: Iterable[Any], service_of: Callable[[str], str] = lambda n: ""
                 ) -> list[Span]:
    """Zipkin v2 spans straight to the trace store's form (no OTLP round trip: building
    and reading back the protobufs was most of the cost of a span)."""
    out = []
    for span in spans:
        c = _check(span)
        out.append(make_span(
            trace_id=c.trace_id, span_id=c.span_id, parent_span_id=c.parent_span_id,
            name=c.name, kind=STORED_KINDS.get(c.kind, "internal"),
            start_ns=c.start_us * 1000, end_ns=(c.start_us + c.length_us) * 1000,
            attrs={str(k): str(v) for k, v in c.tags.items()}, resource_service=c.service,
            error="error" in c.tags, service_of=service_of))
    return out


def otlp_from_zipkin(spans: Iterable[Any]) -> trace_service_pb2.ExportTraceServiceRequest:
    """Zipkin v2 spans -> one OTLP export request, a resource per service name."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    by_service: dict[str, Any] = {}  # ScopeSpans (InstrumentationLibrarySpans)
    for span in spans:
        service, converted = otlp_span(span)
        scope = by_service.get(service)
        if scope is None:
            rs = req.resource_spans.add(resource=resource_pb2.Resource(
                attributes=[_kv("service.name", service)] if service else []))
            scope = by_service[service] = getattr(rs, SCOPE_SPANS).add()
        scope.spans.append(converted)
    return req


def node_of(span: Any) -> str:
    """The node id a Zipkin span says reported it (Envoy's ``node_id`` tag); "" if none."""
    tags = span.get("tags") if isinstance(span, dict) else None
    node = tags.get("node_id") if isinstance(tags, dict) else None
    return node if isinstance(node, str) else ""


def request_peer(request: web.Request) -> Peer | None:
    """Who posted: None over plain HTTP (the operator listener, where the middleware
    checked an operator credential); over TLS (the agents' listener) the SPIFFE ID of the
    client certificate, which the TLS layer verified against the trust bundle.
    Unauthenticated without one, PermissionDenied if it is not a workload identity."""
    if not request.secure:
        return None
    cert = peer_certificate(request)
    if cert is None:
        raise Unauthenticated("spans are accepted from mesh identities only: present the "
                              "workload certificate (mTLS)")
    if cert.identity is None:
        raise PermissionDenied(cert.problem)
    return Peer(cert.identity)


# (decoded spans, who posted them) -> how many were kept; raises InvalidSpans
SpansSink = Callable[[list[Any], Peer | None], int]


def spans_handler(on_spans: SpansSink) -> Callable[[web.Request], Any]:
    """The aiohttp handler of ``POST /api/v2/spans``: 401/403 for a caller that is not a
    mesh identity (before the body is read), 400 when malformed (the whole batch is
    refused, as Zipkin's own collector does), 403 when no span was the caller's to
    report, else 202."""

    async def post_spans(request: web.Request) -> web.Response:
        try:
            peer = request_peer(request)
        except (Unauthenticated, PermissionDenied) as e:
            return error_response(e)
        try:  # size (413), depth, integers and NaN held to shoal.api.limits
            body = loads_json(await read_body(request, MAX_SPANS_BODY_BYTES) or b"[]",
                              max_nodes=None)  # a batch is bounded by MAX_SPANS instead
        except ValidationError as e:
            why = "; ".join(str(v) for v in e.violations)
            return web.json_response({"error": f"body must be a JSON list of spans: {why}"},
                                     status=400)
        if not isinstance(body, list):
            return web.json_response({"error": "body must be a JSON list of spans"}, status=400)
        if len(body) > MAX_SPANS:
            return web.json_response({"error": f"at most {MAX_SPANS} spans per request"},
                                     status=413)
        try:
            kept = on_spans(body, peer)
        except InvalidSpans as e:
            return web.json_response({"error": str(e)}, status=400)
        if body and not kept:
            return web.json_response({"error": f"none of the {len(body)} spans was reported "
                                               f"by a node {peer} may speak for"}, status=403)
        return web.Response(status=202)

    return post_spans
