"""The dashboard's routes on the control plane's REST app.

  GET /api/v1/topology[?window=60]                       service graph + golden signals
  GET /api/v1/slos                                       every SLO's status
  GET /api/v1/metrics/series?service=&window=300&step=10 golden signals over time
  GET /ui/                                               the web UI (static, no build step)

Metrics come from a :class:`MetricsStore` the control plane hands in; without one the
routes answer with the configured services and no traffic (``"metrics": false``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from shoal.api.meta import Resource
from shoal.api.selector import selects
from shoal.errors import ValidationError, Violation
from shoal.multicluster.federation import RemoteEdges
from shoal.multicluster.labels import CLUSTER_LABEL
from shoal.store.base import Store
from shoal.telemetry.model import Edge, EdgeRates, EdgeSample, MetricsStore
from shoal.telemetry.slo import SloEvaluator, service_fqdn
from shoal.telemetry.topology import build_topology, service_signals

API = "/api/v1"
STATIC = Path(__file__).parent / "static"
MAX_POINTS = 360
MAX_SERIES_WINDOW = 6 * 3600.0  # the longest chart of a store without retention_seconds
RATE_FLOOR = 30.0


class NoMetrics:
    """A metrics store with nothing in it (collection not running)."""

    retention_seconds = 0.0

    def add(self, samples: list[EdgeSample]) -> None:
        pass

    def edges(self) -> list[Edge]:
        return []

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        return []

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        return 0.0, 0.0


def _number(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (lo <= value <= hi):
        raise ValidationError([Violation(name, f"must be a number from {lo:g} to {hi:g}")])
    return value


class DashboardApi:
    def __init__(self, store: Store, metrics: Callable[[], MetricsStore | None], *,
                 started: float | None = None, domain: str = "cluster.local",
                 clock: Callable[[], float] = time.time,
                 remote_edges: Callable[[float], Awaitable[RemoteEdges]] | None = None):
        """``remote_edges``: multi-cluster, the other clusters' own traffic per edge."""
        self._remote_edges = remote_edges
        self._store = store
        self._metrics = metrics
        self._started = clock() if started is None else started
        self._domain = domain
        self._clock = clock

    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{API}/topology", self.topology)
        r.add_get(f"{API}/slos", self.slos)
        r.add_get(f"{API}/metrics/series", self.series)
        r.add_get("/ui", self.index)
        r.add_get("/ui/", self.index)
        r.add_static("/ui/static/", STATIC, append_version=False)

    def _store_metrics(self) -> tuple[MetricsStore, bool]:
        m = self._metrics()
        return (m, True) if m is not None else (NoMetrics(), False)

    async def _services(self) -> list[str]:
        items, _ = await self._store.list("Service", None)
        return [f"{s.metadata.name}.{s.metadata.namespace}.svc.{self._domain}" for s in items]

    async def _clusters(self) -> dict[str, set[str]]:
        """Service FQDN -> the clusters its workloads are in (multi-cluster: the store is
        the control plane's view, remote clusters included)."""
        services, _ = await self._store.list("Service", None)
        workloads, _ = await self._store.list("Workload", None)
        out: dict[str, set[str]] = {}
        for s in services:
            selector = s.spec.selector
            where = {w.spec.labels.get(CLUSTER_LABEL, "") for w in workloads
                     if selector and w.metadata.namespace == s.metadata.namespace
                     and selects(selector, w.spec.labels)}
            if where - {""}:
                out[f"{s.metadata.name}.{s.metadata.namespace}.svc.{self._domain}"] = \
                    where - {""}
        return out

    async def topology(self, request: web.Request) -> web.Response:
        window = _number(request, "window", 60, 1, 6 * 3600)
        metrics, live = self._store_metrics()
        now = self._clock()
        rates = metrics.rates(window, now=now)
        reporting: dict[str, str] = {}  # remote cluster -> "ok" or why its edges are missing
        if self._remote_edges is not None:
            remote = await self._remote_edges(window)
            rates, reporting = rates + remote.rates, remote.clusters
        topo = build_topology(rates, window,
                              services=await self._services(), clusters=await self._clusters())
        return web.json_response({"at": now, "metrics": live, "remoteClusters": reporting,
                                  **topo.to_dict()})

    async def slo_statuses(self) -> tuple[list[Resource], list[dict]]:
        items, _ = await self._store.list("ServiceLevelObjective", None)
        metrics, _ = self._store_metrics()
        evaluator = SloEvaluator(metrics, started=self._started, domain=self._domain)
        return items, [s.to_dict() for s in evaluator.evaluate(items, now=self._clock())]

    async def slos(self, request: web.Request) -> web.Response:
        _, statuses = await self.slo_statuses()
        _, live = self._store_metrics()
        return web.json_response({"at": self._clock(), "metrics": live, "slos": statuses})

    async def series(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        if not service:
            raise ValidationError([Violation("service", "is required")])
        fqdn = service_fqdn(service, request.query.get("namespace", "default"), self._domain)
        metrics, live = self._store_metrics()
        # as far back as the store keeps history (a durable store: days), at least 6 h
        longest = max(MAX_SERIES_WINDOW, float(getattr(metrics, "retention_seconds", 0.0)))
        window = _number(request, "window", 300, 1, longest)
        step = _number(request, "step", 10, 1, 3600)
        if window / step > MAX_POINTS:
            raise ValidationError([Violation("step", f"window/step must be at most {MAX_POINTS}")])
        now = self._clock()
        end = math.floor(now / step) * step
        # each point's rate is over at least RATE_FLOOR seconds: sidecars report every few
        # seconds, and a shorter window would alias their reports into a zig-zag
        span = max(step, RATE_FLOOR)
        points = []
        for i in range(int(window // step), -1, -1):
            at = end - i * step
            s = service_signals(metrics.rates(span, now=at), fqdn, span)
            points.append({"at": at, **s.to_dict()})
        return web.json_response({"service": fqdn, "step": step, "rateWindow": span,
                                  "metrics": live,
                                  "points": points})

    async def index(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ui":
            raise web.HTTPFound("/ui/")
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
