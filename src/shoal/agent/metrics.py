"""The agent's metrics endpoint: Prometheus scrapes each workload directly (Istio's
convention; docs/adr/0028, :mod:`shoal.telemetry.scrape`); the control plane reads the
proxy's access log from it (``GET /logs``, :mod:`shoal.agent.access_logs`).

``GET /stats/prometheus`` on ``<workload address>:<--metrics-port>``. Its text is the
proxy's own per-edge counters -- the full report the agent's stats reporter builds
(:meth:`shoal.agent.stats.StatsReporter.latest`) -- taken by the control plane's own
:class:`~shoal.telemetry.ingest.ProxyCounters` and rendered by its
:class:`~shoal.telemetry.prometheus.MeshCollector`: the same ``istio_*`` names and labels
as the control plane's ``/metrics`` (only those families: the control plane's own
metrics are its own). Values are as of the reporter's latest reading of Envoy (about
once a second) and cumulative over the agent's life, across Envoy restarts.

Who may call it:

* TLS with the workload certificate (renewals and trust-bundle changes apply from the
  next handshake, :mod:`shoal.agent.metrics_tls`);
* a client certificate chaining to the mesh roots is required: without one the TLS
  handshake fails;
* ``/stats/prometheus`` answers only the scraper identity (``--metrics-scraper``,
  default ``spiffe://<trust domain>/ns/<root namespace>/sa/prometheus``); any other
  certificate gets 403;
* ``/logs?tail=&cursor=`` answers only the control plane: its serving certificate
  (shoal.ca.serving: DNS SAN ``shoal-control-plane``, no URI SAN), which no workload
  certificate can be (:func:`check_control_plane`); any other gets 403.

An agent without a workload identity (no token) has no certificate to serve with, so it
serves nothing (and says so once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pydantic
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from shoal.agent.access_logs import Cursor, LocalAccessLog
from shoal.agent.config import AgentConfig, Plan
from shoal.agent.identity import Svid
from shoal.agent.metrics_tls import FollowingContext
from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.ca.peer_cert import PeerCertificate, request_peer
from shoal.ca.serving import SERVER_NAME
from shoal.ca.spiffe import SpiffeId
from shoal.control.errors import error_response
from shoal.errors import PermissionDenied, ShoalError, Unauthenticated
from shoal.registry.snapshot import MeshConfig
from shoal.telemetry.agent_logs import LOGS_PATH
from shoal.telemetry.ingest import ProxyCounters, ServicePorts
from shoal.telemetry.names import Identity
from shoal.telemetry.prometheus import MeshCollector
from shoal.telemetry.report import StatsReport
from shoal.telemetry.scrape import METRICS_PATH, default_scraper
from shoal.xds.node import node_id

log = logging.getLogger("shoal.agent.metrics")


def own_service_ports(namespace: str, service: str, ports: Mapping[str, int]
                      ) -> ServicePorts:
    """The service port numbers of the agent's own service, by port name (what the
    control plane reads from its Service; destination-side series carry it)."""
    def lookup(ns: str, name: str, port_name: str) -> int | None:
        return ports.get(port_name) if (ns, name) == (namespace, service) else None
    return lookup


def no_service_ports(namespace: str, service: str, port_name: str) -> int | None:
    return None


class IdentitySource(Protocol):
    """What the endpoint needs of the agent's identity (a WorkloadIdentity)."""

    spiffe_id: str
    current: Svid | None

    def subscribe(self, callback: Callable[[Svid], None]) -> None: ...


class _IstioOnly(Collector):
    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        return (m for m in self._inner.collect() if m.name.startswith("istio_"))


class ProxyMetrics:
    """One proxy's rows, rendered as the control plane renders every proxy's."""

    def __init__(self, *, domain: str = MeshConfig.domain,
                 service_ports: ServicePorts = no_service_ports) -> None:
        self.counters = ProxyCounters(domain=domain, service_ports=service_ports)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_IstioOnly(MeshCollector(self.counters)))

    def render(self, report: StatsReport, principal: str) -> bytes:
        """Prometheus text of ``report`` (a full one), sent by ``principal``."""
        self.counters.apply(report, principal)
        return generate_latest(self._registry)


def check_scraper(peer: PeerCertificate | None, scraper: str) -> None:
    """Unauthenticated without a client certificate; PermissionDenied unless it is the
    scraper's (the TLS layer has verified its chain to the mesh roots)."""
    if peer is None:
        raise Unauthenticated("a client certificate from the mesh CA is required")
    if peer.identity is None:
        raise PermissionDenied(peer.problem)
    if peer.identity.uri != scraper:
        raise PermissionDenied(f"{peer.identity} may not read this workload's metrics; "
                               f"only {scraper} may")


def check_control_plane(peer: PeerCertificate | None) -> None:
    """Unauthenticated without a client certificate; PermissionDenied unless it is the
    control plane's serving certificate: the DNS SAN :data:`SERVER_NAME` and no URI SAN
    (every workload certificate has a SPIFFE ID and the DNS SAN
    :data:`WORKLOAD_DNS_NAME` only; the TLS layer has verified the chain)."""
    if peer is None:
        raise Unauthenticated("a client certificate from the mesh CA is required")
    if peer.uris or SERVER_NAME not in peer.dns or WORKLOAD_DNS_NAME in peer.dns:
        who = peer.identity or ", ".join(peer.uris + peer.dns) or "a certificate without SANs"
        raise PermissionDenied(f"{who} may not read this workload's access log; only the "
                               f"control plane ({SERVER_NAME}) may")


class MetricsEndpoint:
    def __init__(self, identity: IdentitySource | None, latest: Callable[[], StatsReport],
                 metrics: ProxyMetrics, *, host: str, port: int, scraper: str,
                 access_log: LocalAccessLog | None = None) -> None:
        self._identity = identity
        self._latest = latest
        self._metrics = metrics
        self._access_log = access_log
        self.host = host
        self.port = port
        self.scraper = scraper
        self.tls = FollowingContext()
        self.scrapes = 0
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Will it serve: a port, and a certificate to serve with."""
        return self.port != 0 and self._identity is not None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.scrape)
        if self._access_log is not None:
            app.router.add_get(LOGS_PATH, self.logs)
        return app

    async def logs(self, request: web.Request) -> web.Response:
        """The proxy's newest access-log entries after ``cursor`` (the control plane's)."""
        try:
            check_control_plane(request_peer(request))
        except ShoalError as e:
            return error_response(e)
        assert self._access_log is not None
        q = request.query
        try:
            tail = int(q.get("tail") or 100)
            cursor = Cursor.parse(q["cursor"]) if q.get("cursor") else None
        except ValueError as e:
            return web.json_response({"error": f"bad query: {e}"}, status=400)
        return web.json_response(await self._access_log.aread(cursor, tail))

    async def scrape(self, request: web.Request) -> web.Response:
        try:
            check_scraper(request_peer(request), self.scraper)
        except ShoalError as e:
            return error_response(e)
        principal = self._identity.spiffe_id if self._identity is not None else ""
        try:
            report = self._latest()
        except pydantic.ValidationError as e:  # what the control plane would refuse too
            if not self._warned:
                self._warned = True
                log.warning("the proxy's counters do not make a valid report; the metrics "
                            "endpoint answers 500", extra={"error": str(e)[:500]})
            return web.json_response({"error": "the proxy's counters are not reportable"},
                                     status=500)
        self.scrapes += 1
        return web.Response(body=self._metrics.render(report, principal),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def run(self) -> None:
        """Serve until cancelled, from the first workload certificate on."""
        if self.port == 0:
            return
        if self._identity is None:
            log.info("no workload identity (no token): the metrics endpoint is off, "
                     "there is no certificate to serve it with")
            return
        have = asyncio.Event()

        def changed(svid: Svid) -> None:
            self.tls.update(svid)
            if self.tls.context is not None:
                have.set()

        self._identity.subscribe(changed)
        if self._identity.current is not None:
            changed(self._identity.current)
        await have.wait()
        await self._serve()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls.context,
                               reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                log.error("cannot listen for the metrics endpoint: Prometheus will see "
                          "this workload down", extra={"port": self.port, "error": str(e)})
                return
            log.info("metrics endpoint listening", extra={
                "address": f"{self.host}:{self.port}", "path": METRICS_PATH,
                "scraper": self.scraper, "access_log": self._access_log is not None})
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def endpoint_for(config: AgentConfig, plan: Plan, identity: IdentitySource | None,
                 latest: Callable[[], StatsReport], *,
                 service_ports: ServicePorts = no_service_ports,
                 envoy_log: Path | None = None) -> MetricsEndpoint:
    """The endpoint of one agent (sidecar or gateway): on its workload's address, the
    planned port, answering ``--metrics-scraper`` or the scraper of its trust domain;
    with ``envoy_log`` (its Envoy's output), the proxy's access log to the control plane."""
    trust_domain = SpiffeId.parse(identity.spiffe_id).trust_domain \
        if identity is not None else MeshConfig.trust_domain
    reporter = Identity.from_node(node_id(plan.workload, config.namespace), config.service)
    return MetricsEndpoint(identity, latest, ProxyMetrics(service_ports=service_ports),
                           host=config.address, port=plan.metrics_port,
                           scraper=config.metrics_scraper or default_scraper(trust_domain),
                           access_log=LocalAccessLog(envoy_log, reporter)
                           if envoy_log is not None else None)
