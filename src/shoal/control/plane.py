"""The control-plane process: builds the components and runs them as one task group."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from shoal.api import load_resource
from shoal.ca.authority import CertificateAuthority
from shoal.ca.rest import IdentityApi
from shoal.ca.serving import ServingCertificate
from shoal.ca.setup import open_ca
from shoal.ca.spiffe import SpiffeId
from shoal.control.admission import Admission
from shoal.control.audit import AuditLog
from shoal.control.auth import OperatorAuth
from shoal.control.config import Address, ControlPlaneConfig
from shoal.control.operators import AdminCredential, OperatorApi
from shoal.control.proxies import ProxyInspector
from shoal.control.rest import RestApi
from shoal.control.revocations import RevocationIndex
from shoal.dashboard.api import DashboardApi
from shoal.errors import Unavailable
from shoal.multicluster.api import ClusterApi
from shoal.multicluster.federation import Federation
from shoal.multicluster.remote import RemoteClusters, trust_context
from shoal.multicluster.view import ClusterView
from shoal.ratelimit.embedded import EmbeddedRateLimit
from shoal.registry import gamma, gateways
from shoal.registry.etcd_leases import EtcdWorkloadRegistry
from shoal.registry.leases import Registry, WorkloadRegistry
from shoal.registry.snapshot import MeshSnapshot, is_ready
from shoal.store.base import Store
from shoal.store.etcd import EtcdStore
from shoal.store.memory import MemoryStore
from shoal.store.sqlite import SqliteStore
from shoal.telemetry.agent_logs import AgentLogs, HttpsAgents
from shoal.telemetry.discovery import PrometheusTargets
from shoal.telemetry.history import DurableMetricsStore
from shoal.telemetry.hub import Telemetry
from shoal.telemetry.model import MetricsStore
from shoal.xds.cache import SnapshotCache
from shoal.xds.node import node_owners
from shoal.xds.server import NodeGuard, StatusTracker, XdsServer
from shoal.xds.sync import Sync

log = logging.getLogger(__name__)

GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 100_000),
    # A connect storm (thousands of proxies at once, e.g. after a control-plane restart)
    # queues new streams in gRPC core until the event loop takes them; past its default
    # 1,000 pending streams gRPC cancels the newcomers (CANCELLED), so proxies would
    # reconnect in waves. Let them wait instead: each is served in arrival order.
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
    ("grpc.server_max_unrequested_time_in_server", 300),
]


def open_store(config: ControlPlaneConfig) -> Store:
    if config.store == "memory":
        return MemoryStore(loads=load_resource)
    if config.store == "etcd":
        return EtcdStore(config.etcd_endpoints, loads=load_resource,
                         security=config.etcd_security)
    return SqliteStore(config.db_path, loads=load_resource)


def private_data_dir(path: Path) -> None:
    """The data directory holds the CA, the admin credential, the store and the audit log:
    its owner's alone (0700), whatever the umask made of it."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError as e:  # not ours to change: say so, do not stop
        log.warning("cannot make the data directory private", extra={
            "path": str(path), "error": str(e)})


def trace_collector(api: Address | None) -> str:
    """Where sidecars send spans (MeshConfig.trace_collector): the agents' TLS listener's
    address when it is a concrete one (they post with their certificate, ADR 0025); ""
    (W3C-only OpenTelemetry tracer over xDS) without one, or for a wildcard host or port
    0, which name no address a sidecar could use (docs/adr/0008)."""
    if api is None or api.port == 0 or api.host in ("", "0.0.0.0", "::"):
        return ""
    return f"[{api.host}]:{api.port}" if ":" in api.host else str(api)


@dataclass
class ControlPlane:
    """All components of one control plane, constructed from a config (no I/O yet)."""

    config: ControlPlaneConfig
    store: Store
    registry: Registry
    cache: SnapshotCache
    status: StatusTracker
    sync: Sync
    xds: XdsServer
    api: RestApi
    ready: asyncio.Event
    ca: CertificateAuthority
    serving_cert: ServingCertificate
    api_address: Address | None = None
    xds_address: Address | None = None
    agent_api_address: Address | None = None
    secure_xds_address: Address | None = None
    telemetry: Telemetry | None = None  # built in serving(); see shoal.telemetry.hub
    view: ClusterView | None = None  # the store + remote clusters, as the sync loop sees it
    remotes: RemoteClusters | None = None
    identity: IdentityApi | None = None
    revocations: RevocationIndex | None = None
    operators: OperatorApi | None = None
    admin: AdminCredential | None = None

    @property
    def metrics(self) -> MetricsStore | None:
        return self.telemetry.store if self.telemetry is not None else None

    @staticmethod
    def build(config: ControlPlaneConfig, store: Store | None = None) -> ControlPlane:
        if config.mesh.trace_collector is None:  # sidecars POST Zipkin spans to our API
            config = dataclasses.replace(config, mesh=dataclasses.replace(
                config.mesh, trace_collector=trace_collector(config.agent_api)))
        private_data_dir(config.data_dir)
        store = store or open_store(config)
        cache = SnapshotCache()
        status = StatusTracker()
        # Multi-cluster: the sync loop reads the local store merged with remote clusters.
        view = ClusterView(store, cluster=config.mesh.cluster, network=config.mesh.network)
        sync = Sync(view, cache, mesh_config=config.mesh, debounce=config.debounce,
                    max_delay=config.max_delay)
        xds = XdsServer(cache, sync, status)
        # With etcd, leases live in etcd: any instance can renew any workload's lease.
        registry: Registry = (EtcdWorkloadRegistry(store, ttl=config.lease_ttl)
                              if isinstance(store, EtcdStore)
                              else WorkloadRegistry(store, ttl=config.lease_ttl))
        ready = asyncio.Event()
        inspector = ProxyInspector(lambda: [s.to_dict() for s in xds.status()],
                                   lambda: sync.proxies, latest=_latest_version(cache),
                                   ready=_workload_ready(sync))
        ca, tokens = open_ca(config.ca_dir, config.mesh.trust_domain, config.cert_ttl,
                             ca_cert=config.ca_cert, ca_key=config.ca_key,
                             ca_chain=config.ca_chain, token_key=config.token_key)
        hosts = [a.host for a in (config.agent_api, config.secure_xds) if a is not None]
        serving = ServingCertificate(ca, hosts)
        revocations = RevocationIndex(store, config.mesh.root_namespace)
        tokens.revocations = revocations
        identity = IdentityApi(ca, tokens, require_tokens=config.require_tokens)
        audit = AuditLog(None if config.store == "memory" else config.audit_path)
        auth = OperatorAuth(tokens, bind_host=config.api.host, aliases=config.api_hosts)
        api = RestApi(store, registry, inspector, ready=ready, auth=auth, identity=identity,
                      audit=audit, pushed_revision=lambda: sync.stats.last_revision,
                      mesh=config.mesh,
                      admit=Admission(lambda: sync.mesh, lambda: sync.proxies).check,
                      status=lambda r: (gamma.route_status(sync.mesh, r)
                                        if r.kind in gamma.KINDS_ROUTES
                                        or r.kind in gateways.ROUTE_KINDS else
                                        gateways.gateway_status(sync.mesh, r)
                                        if r.kind == gateways.KIND else
                                        gateways.class_status(r)
                                        if r.kind == "GatewayClass" else None))
        operators = OperatorApi(tokens, store, audit, config.mesh.root_namespace)
        admin = AdminCredential(tokens, config.admin_token_path, config.admin_token_ttl)
        remotes = RemoteClusters(view, config.data_dir, trust_context(ca.files.bundle_path))
        return ControlPlane(config, store, registry, cache, status, sync, xds, api, ready, ca,
                            serving, view=view, remotes=remotes, identity=identity,
                            revocations=revocations, operators=operators, admin=admin)

    def _urls(self) -> dict[str, str]:
        """Where this control plane is reachable (for `shoal cluster` and remote secrets)."""
        out = {}
        if self.api_address is not None:
            out["api"] = f"http://{self.api_address}"
        if self.agent_api_address is not None:
            out["agentApi"] = f"https://{self.agent_api_address}"
        return out

    async def run(self) -> None:
        """Serve until cancelled; ``ready`` is set once both listeners accept."""
        async with self.serving():
            await asyncio.Event().wait()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[ControlPlane]:
        """Start everything, yield while serving, stop everything (in reverse order).

        Port 0 in the config picks a free port; ``api_address``/``xds_address`` tell which.
        """
        await self.registry.start()
        grpc_server = grpc.aio.server(options=GRPC_OPTIONS)
        # who may be which proxy / report for it: the peer's certificate (ADR 0020)
        guard = NodeGuard(self.config.mesh.trust_domain, node_owners(lambda: self.sync.mesh),
                          trust_plaintext=not self.config.require_tokens)
        self.xds.add_to(grpc_server, guard)
        identity = self.identity
        # metrics history that outlives this process beside the config store (ADR 0027);
        # in memory only with the in-memory store
        history = None if self.config.store == "memory" else \
            await DurableMetricsStore.open(self.config.data_dir)
        self.telemetry = self.telemetry or Telemetry(
            store=history,
            proxies=self.api.proxy_status,
            otlp_export=self.config.otlp_export, domain=self.config.mesh.domain,
            trace_sampling=self.config.mesh.trace_sampling,
            authenticate=lambda request: _caller(identity, request),
            service_ports=lambda ns, name, port: _service_port(self.sync.mesh, ns, name, port),
            # without the stream, `shoal logs` reads the agents' own access logs
            agent_logs=None if self.config.mesh.access_log_stream else AgentLogs(
                lambda: self.sync.mesh, HttpsAgents(self.serving_cert.client_context)))
        self.telemetry.add_to(grpc_server, guard)  # OTLP logs + traces on the xDS ports
        xds_port = grpc_server.add_insecure_port(str(self.config.xds))
        if xds_port == 0:
            raise Unavailable(f"cannot listen for xDS on {self.config.xds}")
        self.xds_address = Address(self.config.xds.host, xds_port)
        if self.config.secure_xds is not None:
            port = grpc_server.add_secure_port(str(self.config.secure_xds),
                                               self.serving_cert.grpc_credentials())
            if port == 0:
                raise Unavailable(f"cannot listen for secure xDS on {self.config.secure_xds}")
            self.secure_xds_address = Address(self.config.secure_xds.host, port)
        app = self.api.app()
        if self.operators is not None:
            self.operators.mount(app)
        self.telemetry.add_routes(app)
        PrometheusTargets(lambda: self.sync.mesh).mount(app)  # http_sd (docs/adr/0028)
        ratelimit = None  # the rate-limit service, unless a separate one is configured
        if self.config.mesh.ratelimit_address is None:
            ratelimit = EmbeddedRateLimit(self.store, None if self.config.store == "memory"
                                          else self.config.data_dir, self.config.ratelimit_redis)
            ratelimit.add_to(grpc_server, app, guard)  # callers: as xDS (ADR 0025)
        federation = None  # multi-cluster: the other clusters' traffic and traces too
        if self.remotes is not None:
            federation = Federation(self.remotes, trust_context(self.ca.files.bundle_path))
            self.telemetry.remote_spans = federation.spans
            self.telemetry.remote_traces = federation.traces
            self.telemetry.cluster = self.config.mesh.cluster
        DashboardApi(self.view or self.store, lambda: self.metrics,
                     domain=self.config.mesh.domain,
                     remote_edges=federation.edges if federation else None).mount(app)
        if self.remotes is not None:
            telemetry = self.telemetry
            ClusterApi(self.store, self.config.mesh, self.remotes,
                       self.identity if self.config.require_tokens else None,
                       self._urls, local_rates=lambda window: telemetry.store.rates(window),
                       local_spans=telemetry.traces.get,
                       local_traces=telemetry.traces.summaries).mount(app)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.api.host, self.config.api.port,
                           reuse_address=True)
        tls_site = None
        if self.config.agent_api is not None:
            tls_site = web.TCPSite(runner, self.config.agent_api.host, self.config.agent_api.port,
                                   reuse_address=True,
                                   ssl_context=self.serving_cert.ssl_context())
        try:
            async with asyncio.TaskGroup() as tg:
                sync_ready = asyncio.Event()
                tasks = [tg.create_task(self.sync.run(sync_ready), name="sync")]
                if self.revocations is not None:  # tokens are checked from the first request
                    since = await self.revocations.load()
                    tasks.append(tg.create_task(self.revocations.run(since), name="revocations"))
                if self.admin is not None:
                    self.admin.ensure()
                    tasks.append(tg.create_task(self.admin.run(), name="admin-credential"))
                await sync_ready.wait()
                if self.remotes is not None:  # remote endpoints in the first configs
                    tasks.append(tg.create_task(self.remotes.run(), name="remote-clusters"))
                    await asyncio.sleep(0)  # let it load the remote secrets
                    await self.remotes.wait_initial(self.config.remote_sync_timeout)
                    await self.sync.push_pending()
                await grpc_server.start()
                try:
                    await site.start()
                except OSError as e:
                    raise Unavailable(f"cannot listen for the API on {self.config.api}: {e}") \
                        from e
                sock = site._server.sockets[0]  # type: ignore[union-attr]
                self.api_address = Address(self.config.api.host, sock.getsockname()[1])
                if tls_site is not None:
                    assert self.config.agent_api is not None
                    try:
                        await tls_site.start()
                    except OSError as e:
                        raise Unavailable(f"cannot listen for the agent API on "
                                          f"{self.config.agent_api}: {e}") from e
                    sock = tls_site._server.sockets[0]  # type: ignore[union-attr]
                    self.agent_api_address = Address(self.config.agent_api.host,
                                                     sock.getsockname()[1])
                tasks.append(tg.create_task(self.registry.run(), name="leases"))
                tasks.append(tg.create_task(self.telemetry.run(), name="telemetry"))
                if ratelimit is not None:
                    tasks.append(tg.create_task(ratelimit.run(), name="ratelimit"))
                tasks.append(tg.create_task(self.serving_cert.run(), name="serving-cert"))
                self.ready.set()
                log.info("control plane ready", extra={
                    "api": str(self.api_address), "xds": str(self.xds_address),
                    "agent_api": str(self.agent_api_address),
                    "secure_xds": str(self.secure_xds_address), "store": self.config.store,
                    "trust_bundle": str(self.ca.files.bundle_path),
                    "operator_credential": str(self.config.admin_token_path)})
                try:
                    yield self
                finally:
                    self.ready.clear()
                    for task in tasks:
                        task.cancel()
                    await runner.cleanup()
                    await grpc_server.stop(grace=1.0)
                    await self.telemetry.close()
        finally:
            await self.store.close()


def _service_port(mesh: MeshSnapshot, namespace: str, service: str, port_name: str
                  ) -> int | None:
    """The number of a Service's port, by name (destination-side metrics' label)."""
    resource = mesh.service(namespace, service)
    spec = resource.spec if resource is not None else None
    for p in getattr(spec, "ports", ()):
        if p.name == port_name:
            return int(p.port)
    return None


def _caller(identity: IdentityApi | None, request: web.Request) -> SpiffeId | None:
    """The workload a telemetry report comes from (token or certificate); None when the
    control plane does not require workload credentials."""
    claims = identity.authenticate(request) if identity is not None else None
    return claims.spiffe_id if claims is not None else None


def _latest_version(cache: SnapshotCache) -> Callable[[str], str | None]:
    def latest(node_id: str) -> str | None:
        snapshot = cache.get(node_id)
        return snapshot.version if snapshot is not None else None
    return latest


def _workload_ready(sync: Sync) -> Callable[[str, str], bool | None]:
    def ready(namespace: str, name: str) -> bool | None:
        workload = sync.mesh.workload(namespace, name)
        return is_ready(workload) if workload is not None else None
    return ready
