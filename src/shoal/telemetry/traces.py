"""Recent traces from the sidecars (OTLP spans), in bounded memory.

Keeps at most ``max_traces`` traces and ``max_spans`` spans (the oldest trace goes
first). Spans are flattened to JSON-able dicts; the sidecar that made a span is named by
Envoy's ``node_id`` span tag, resolved to its service when the access logs told us.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from shoal.telemetry.accesslog import attributes, field_of
from shoal.telemetry.names import Identity

Span = dict[str, Any]
KINDS = {trace_pb2.Span.SPAN_KIND_SERVER: "server", trace_pb2.Span.SPAN_KIND_CLIENT: "client",
         trace_pb2.Span.SPAN_KIND_INTERNAL: "internal"}


def make_span(*, trace_id: bytes, span_id: bytes, parent_span_id: bytes, name: str,
              kind: str, start_ns: int, end_ns: int, attrs: dict[str, Any],
              resource_service: str, error: bool,
              service_of: Callable[[str], str] = lambda node: "") -> Span:
    """The stored form of one span, whichever wire it came over (OTLP, Zipkin)."""
    node = str(attrs.get("node_id", ""))
    ident = Identity.from_node(node) if node else None
    status = attrs.get("http.status_code", "")
    return {
        "trace_id": trace_id.hex(), "span_id": span_id.hex(),
        "parent_span_id": parent_span_id.hex(), "name": name, "kind": kind,
        "start_ns": start_ns, "end_ns": end_ns, "duration_ms": (end_ns - start_ns) / 1e6,
        "node_id": node, "workload": ident.workload if ident else "",
        "namespace": ident.namespace if ident else "",
        "service": service_of(node) or resource_service,
        "status": int(status) if str(status).isdigit() else None,
        "error": error or attrs.get("error") == "true",
        "attributes": attrs,
    }


def spans_from_otlp(req: trace_service_pb2.ExportTraceServiceRequest,
                    service_of: Callable[[str], str] = lambda node: "") -> Iterator[Span]:
    for rs in req.resource_spans:
        res = attributes(rs.resource.attributes)
        for ss in field_of(rs, "scope_spans", "instrumentation_library_spans"):
            for s in ss.spans:
                yield make_span(
                    trace_id=s.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id,
                    name=s.name, kind=KINDS.get(s.kind, "unspecified"),
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    attrs=attributes(s.attributes),
                    resource_service=str(res.get("service.name", "")),
                    error=s.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                    service_of=service_of)


class TraceStore:
    def __init__(self, max_traces: int = 2000, max_spans: int = 50_000,
                 service_of: Callable[[str], str | None] = lambda node: None) -> None:
        self._max_traces, self._max_spans = max_traces, max_spans
        self._service_of = service_of  # node id -> service, asked again when read
        self._traces: OrderedDict[str, list[Span]] = OrderedDict()
        self._spans = 0

    def add(self, spans: Iterator[Span] | list[Span]) -> None:
        for span in spans:
            tid = span["trace_id"]
            trace = self._traces.get(tid)
            if trace is None:
                trace = self._traces[tid] = []
            trace.append(span)
            self._spans += 1
            span["reported_service"] = span["service"]
        while self._traces and (len(self._traces) > self._max_traces
                                or self._spans > self._max_spans):
            _, dropped = self._traces.popitem(last=False)
            self._spans -= len(dropped)

    def _resolve(self, spans: list[Span]) -> list[Span]:
        for s in spans:
            s["service"] = self._service_of(s["node_id"]) or s["reported_service"]
        return spans

    def get(self, trace_id: str) -> list[Span] | None:
        spans = self._traces.get(trace_id.lower())
        spans = self._resolve(spans) if spans else None
        return sorted(spans, key=lambda s: s["start_ns"]) if spans else None

    def summaries(self, service: str | None = None, limit: int = 20,
                  ids: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Newest first: one line per trace (root, services, span count, duration), at
        most ``limit`` with ``service`` in them; then those of ``ids`` that are here and
        not listed yet (multi-cluster: this cluster's parts of traces found elsewhere)."""
        out = []
        for tid in reversed(self._traces):
            line = self._summary(tid)
            if service and service not in line["services"]:
                continue
            out.append(line)
            if len(out) >= limit:
                break
        listed = {t["trace_id"] for t in out}
        return out + self.summaries_of(i for i in ids if i.lower() not in listed)

    def summaries_of(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The summaries of those traces of ``ids`` that are here."""
        return [self._summary(t) for t in sorted({i.lower() for i in ids})
                if t in self._traces]

    def _summary(self, tid: str) -> dict[str, Any]:
        spans = self._resolve(self._traces[tid])
        start = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] for s in spans)
        ids = {s["span_id"] for s in spans}
        roots = [s for s in spans if s["parent_span_id"] not in ids]
        root = min(roots or spans, key=lambda s: s["start_ns"])
        return {"trace_id": tid, "root": root["name"], "root_service": root["service"],
                "services": sorted({s["service"] for s in spans if s["service"]}),
                "spans": len(spans), "errors": sum(1 for s in spans if s["error"]),
                "start_ns": start, "duration_ms": (end - start) / 1e6}


def merge_summaries(local: list[dict[str, Any]], remote: list[dict[str, Any]], limit: int,
                    local_cluster: str = "") -> list[dict[str, Any]]:
    """One list of trace summaries from this cluster's and the remote clusters' (each
    remote one marked with its ``cluster``), newest first. A trace seen in several
    clusters is one line: services, spans and errors added up, the earliest root, the
    whole time span, and ``clusters`` naming where its spans are."""
    merged: dict[str, dict[str, Any]] = {}
    for t in [{**t, "cluster": local_cluster} for t in local] + remote:
        t = dict(t)
        cluster = t.pop("cluster", "")
        end = t["start_ns"] + t["duration_ms"] * 1e6
        have = merged.get(t["trace_id"])
        if have is None:
            merged[t["trace_id"]] = {**t, "clusters": [cluster], "_end": end}
            continue
        if t["start_ns"] < have["start_ns"]:
            have.update(root=t["root"], root_service=t["root_service"], start_ns=t["start_ns"])
        have["_end"] = max(have["_end"], end)
        have["duration_ms"] = (have["_end"] - have["start_ns"]) / 1e6
        have["services"] = sorted(set(have["services"]) | set(t["services"]))
        have["spans"] += t["spans"]
        have["errors"] += t["errors"]
        have["clusters"] = sorted(set(have["clusters"]) | {cluster})
    out = sorted(merged.values(), key=lambda t: t["start_ns"], reverse=True)[:limit]
    for t in out:
        del t["_end"]
    return out
