"""The control plane's telemetry sinks, wired: OTLP receivers on the gRPC server, stores,
Prometheus ``/metrics`` and the telemetry REST routes.

Routes:
  GET /metrics                              Prometheus text (Istio names)
  GET /api/v1/metrics/edges?window=60       EdgeRates per edge (JSON)
  GET /api/v1/logs?service=&namespace=&tail=&cursor=&wait=
                                            access-log entries, oldest first, and a cursor
                                            to follow with: with --access-log-stream what
                                            the sidecars streamed, else read from the
                                            service's agents (shoal.telemetry.agent_logs)
  GET /api/v1/traces?service=&limit=        recent traces, newest first (all clusters)
  GET /api/v1/traces/{trace_id}             every span of one trace
  POST /api/v2/spans                        Zipkin v2 JSON spans from the sidecars' tracer
                                            (agents' TLS listener, workload certificate)
  POST /api/v1/telemetry/stats              a proxy's per-edge counters from its agent
                                            (shoal.telemetry.report; the workload's
                                            certificate or token)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pydantic
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shoal.api.parse import model_violations
from shoal.ca.spiffe import SpiffeId
from shoal.control.errors import json_body
from shoal.errors import ShoalError, ValidationError
from shoal.telemetry.accesslog import AccessLogStore, entries_from_otlp
from shoal.telemetry.agent_logs import AgentLogs
from shoal.telemetry.ingest import ProxyCounters, ServicePorts
from shoal.telemetry.model import MetricsStore
from shoal.telemetry.otlp import TraceForwarder, otlp_handlers
from shoal.telemetry.prometheus import MeshCollector, registry
from shoal.telemetry.report import MAX_REPORT_BYTES, STATS_PATH, StatsReport
from shoal.telemetry.store import RingMetricsStore
from shoal.telemetry.traces import TraceStore, merge_summaries, spans_from_otlp
from shoal.telemetry.zipkin import (
    SPANS_PATH,
    node_of,
    otlp_from_zipkin,
    spans_handler,
    stored_spans,
)
from shoal.xds.server.peer import NodeGuard, Peer

log = logging.getLogger(__name__)
API = "/api/v1"
MAX_WARNED = 1000  # identities remembered so that each is warned about once
MAX_NODES = 10_000  # node id -> service entries learnt from access logs (oldest go)


# The caller of a workload route: its verified SPIFFE ID, None when the control plane
# does not require workload credentials (shoal.ca.rest.IdentityApi.authenticate)
Authenticate = Callable[[web.Request], SpiffeId | None]


def _anyone(request: web.Request) -> SpiffeId | None:
    return None


class Telemetry:
    def __init__(self, *, proxies: Callable[[], list[dict[str, Any]]] = list,
                 otlp_export: str | None = None, domain: str = "cluster.local",
                 authenticate: Authenticate = _anyone,
                 store: MetricsStore | None = None,
                 service_ports: ServicePorts | None = None,
                 agent_logs: AgentLogs | None = None,
                 trace_sampling: float | None = None) -> None:
        """``agent_logs``: where ``GET /api/v1/logs`` reads when the sidecars do not
        stream their access logs here (None: they do, the ring of streamed entries).
        ``trace_sampling``: the sidecars' (None: they have no tracer), reported with the
        traces so an empty list can say why."""
        self.store = store if store is not None else RingMetricsStore()
        self.counters = ProxyCounters(domain=domain, **(
            {"service_ports": service_ports} if service_ports else {}))
        self._authenticate = authenticate
        self.logs = AccessLogStore()
        self.agent_logs = agent_logs
        self._services: dict[str, str] = {}  # node id -> service (from access logs)
        self.traces = TraceStore(service_of=self._services.get)
        # multi-cluster: trace id -> the spans other clusters have (set by the control plane)
        self.remote_spans: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None
        self.remote_traces: Callable[[str | None, int, list[str]],
                                     Awaitable[list[dict[str, Any]]]] | None = None
        self.cluster = ""  # this control plane's cluster (names local traces when merged)
        self.forwarder = TraceForwarder(otlp_export) if otlp_export else None
        self.trace_sampling = trace_sampling
        self._proxies = proxies
        self.counts = {"access_log_entries": 0, "spans": 0, "refused_batches": 0,
                       "dropped_spans": 0, "stats_reports": 0, "refused_stats_reports": 0}
        self._guard: NodeGuard | None = None  # who may report for which node (add_to)
        self._warned: set[str] = set()  # identities told about dropped spans
        self._registry = registry(MeshCollector(self.counters, self._cp_metrics))
        self._log_waiters: set[asyncio.Event] = set()

    # -- ingest ----------------------------------------------------------------------------
    def _authorize(self, peer: Peer | None, reporters: set[str]) -> None:
        """Over gRPC (``peer`` given), every node the batch reports for must be the
        caller's (NodeGuard.check_reporter); else the whole batch is refused and counted."""
        if peer is None or self._guard is None:
            return
        try:
            for reporter in sorted(reporters):
                self._guard.check_reporter(peer, reporter)
        except ShoalError:
            self.counts["refused_batches"] += 1
            raise

    def on_logs(self, req: logs_service_pb2.ExportLogsServiceRequest,
                peer: Peer | None = None) -> None:
        entries = list(entries_from_otlp(req))
        self._authorize(peer, {str(e.get("reporter", "")) for e in entries})
        for e in entries:
            if e.get("reporter") and e.get("service"):
                if e["reporter"] not in self._services and len(self._services) >= MAX_NODES:
                    del self._services[next(iter(self._services))]
                self._services[e["reporter"]] = e["service"]
        self.counts["access_log_entries"] += len(entries)
        self.logs.add(entries)  # logs only: metrics come from the proxies' counters
        for w in self._log_waiters:
            w.set()

    def on_traces(self, req: trace_service_pb2.ExportTraceServiceRequest,
                  peer: Peer | None = None) -> None:
        spans = list(spans_from_otlp(req, self._services.get))
        self._authorize(peer, {s["node_id"] for s in spans if s["node_id"]})
        self.counts["spans"] += len(spans)
        self.traces.add(spans)
        if self.forwarder is not None:
            self.forwarder.submit(req)

    def on_zipkin(self, spans: list[Any], peer: Peer | None) -> int:
        """Zipkin spans posted by ``peer`` (None: by an operator, on the operator API):
        a span whose reporter (``node_id`` tag) the peer may not speak for is dropped and
        counted, the rest stored (and forwarded as OTLP with --otlp-export). Returns how
        many were taken; a malformed span (InvalidSpans) refuses the whole batch."""
        kept, why = spans, ""
        if peer is not None:
            guard = self._guard or NodeGuard()
            kept = []
            for span in spans:
                try:
                    guard.check_reporter(peer, node_of(span))
                except ShoalError as e:
                    why = str(e)
                    continue
                kept.append(span)
        stored = stored_spans(kept, self._services.get)  # InvalidSpans: nothing kept
        if dropped := len(spans) - len(kept):
            self.counts["dropped_spans"] += dropped
            who = str(peer)
            if who not in self._warned and len(self._warned) < MAX_WARNED:
                self._warned.add(who)
                log.warning("spans dropped: not the poster's to report (warned once per "
                            "identity; counted in shoal_telemetry_dropped_spans)",
                            extra={"peer": who, "dropped": dropped, "reason": why})
        if stored:
            self.counts["spans"] += len(stored)
            self.traces.add(stored)
            if self.forwarder is not None:
                self.forwarder.submit(otlp_from_zipkin(kept))
        return len(stored)

    def add_to(self, server: grpc.aio.Server, guard: NodeGuard | None = None) -> None:
        """The OTLP receivers on ``server``; ``guard`` checks each caller's reports."""
        self._guard = guard
        server.add_generic_rpc_handlers(otlp_handlers(self.on_logs, self.on_traces))

    async def run(self) -> None:
        """Background work: the metrics store's flushes (a durable one), the OTLP
        forwarder (with --otlp-export)."""
        async with asyncio.TaskGroup() as tg:
            if (flush := getattr(self.store, "run", None)) is not None:
                tg.create_task(flush(), name="metrics-history")
            if self.forwarder is not None:
                tg.create_task(self.forwarder.run(), name="otlp-forwarder")

    async def close(self) -> None:
        """Write what the metrics store still holds (a durable one) and close it."""
        if (close := getattr(self.store, "close", None)) is not None:
            await asyncio.to_thread(close)

    def _cp_metrics(self) -> dict[str, Any]:
        dropped = self.forwarder.dropped if self.forwarder else 0
        return {"proxies": self._proxies(), **self.counts, "otlp_forward_dropped": dropped}

    # -- REST ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/metrics", self.metrics)
        r.add_get(f"{API}/metrics/edges", self.edges)
        r.add_get(f"{API}/logs", self.get_logs)
        r.add_get(f"{API}/traces", self.list_traces)
        r.add_get(f"{API}/traces/{{trace_id}}", self.get_trace)
        r.add_post(SPANS_PATH, spans_handler(self.on_zipkin))
        r.add_post(STATS_PATH, self.post_stats)

    async def post_stats(self, request: web.Request) -> web.Response:
        """One proxy's counters from its agent: 401/403 unless the caller is that proxy's
        workload identity (checked before the body is read), 413 too large, 422 malformed
        (nothing of it kept); else 200 ``{"resync": bool}``."""
        try:
            sid = self._authenticate(request)
        except ShoalError:
            self.counts["refused_stats_reports"] += 1
            raise
        try:
            body = await json_body(request, MAX_REPORT_BYTES)
            try:
                report = StatsReport.model_validate(body)
            except pydantic.ValidationError as e:
                raise ValidationError(model_violations(e)) from None
            if sid is not None:  # None: workload credentials are not required here
                (self._guard or NodeGuard()).check_reporter(Peer(sid), report.node)
        except ShoalError:
            self.counts["refused_stats_reports"] += 1
            raise
        samples, resync = self.counters.apply(report, sid.uri if sid is not None else "")
        self.store.add(samples)
        self.counts["stats_reports"] += 1
        return web.json_response({"resync": resync})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def edges(self, request: web.Request) -> web.Response:
        window = _number(request, "window", 60.0)
        rates = self.store.rates(window)
        return web.json_response({"window": window,
                                  "edges": [dataclasses.asdict(r) for r in rates]})

    async def get_logs(self, request: web.Request) -> web.Response:
        q = request.query
        tail = int(_number(request, "tail", 100))
        wait = _number(request, "wait", 0.0)  # long poll for `shoal logs -f`
        cursor = q.get("cursor", "")
        if self.agent_logs is not None:
            if not q.get("service"):
                raise web.HTTPBadRequest(text="service is required: the access logs are "
                                              "read from the service's workloads")
            try:
                page = await self.agent_logs.query(q["service"], q.get("namespace"),
                                                   tail=tail, cursor=cursor, wait=wait)
            except ValueError as e:
                raise web.HTTPBadRequest(text=f"cursor: {e}") from None
            return web.json_response(page)
        # the stream's cursor: the sequence number of the last entry seen
        if cursor and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 20):
            raise web.HTTPBadRequest(text="cursor: not a cursor this control plane returned")
        since = int(cursor) if cursor else int(_number(request, "since", 0))
        entries = self.logs.query(q.get("service"), namespace=q.get("namespace"),
                                  since=since, tail=tail)
        if not entries and wait > 0:
            event = asyncio.Event()
            self._log_waiters.add(event)
            try:  # asyncio.timeout: 3.11's wait_for can swallow a cancellation (sync.py)
                async with asyncio.timeout(min(wait, 30.0)):
                    await event.wait()
            except TimeoutError:
                pass
            finally:
                self._log_waiters.discard(event)
            entries = self.logs.query(q.get("service"), namespace=q.get("namespace"),
                                      since=since, tail=tail)
        last = max((int(e["seq"]) for e in entries), default=since)
        return web.json_response({"entries": entries, "cursor": str(last),
                                  "unreachable": []})

    async def list_traces(self, request: web.Request) -> web.Response:
        """Recent traces, newest first; multi-cluster: the other clusters' too, a trace
        that crossed clusters as one line with the ``clusters`` it has spans in."""
        limit = int(_number(request, "limit", 20))
        service = request.query.get("service") or None
        traces = self.traces.summaries(service, limit)
        if self.remote_traces is not None:
            # the remotes' parts of our traces too (they may not have ``service`` in them),
            # and ours of theirs
            listed = {t["trace_id"] for t in traces}
            remote = await self.remote_traces(service, limit, sorted(listed))
            traces += self.traces.summaries_of(
                t["trace_id"] for t in remote if t["trace_id"] not in listed)
            traces = merge_summaries(traces, remote, limit, self.cluster)
        return web.json_response({"traces": traces, "tracing": {
            "enabled": self.trace_sampling is not None, "sampling": self.trace_sampling}})

    async def get_trace(self, request: web.Request) -> web.Response:
        """One trace: our sidecars' spans, and (multi-cluster) the spans the other
        clusters' sidecars reported for it, each marked with its cluster."""
        tid = request.match_info["trace_id"]
        spans = list(self.traces.get(tid) or [])
        if self.remote_spans is not None:
            ours = {s["span_id"] for s in spans}
            spans += [s for s in await self.remote_spans(tid.lower())
                      if s.get("span_id") not in ours]
            spans.sort(key=lambda s: s.get("start_ns", 0))
        if not spans:
            return web.json_response({"error": f"trace {tid} not found"}, status=404)
        return web.json_response({"trace_id": tid.lower(), "spans": spans})


def _number(request: web.Request, name: str, default: float) -> float:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from None
