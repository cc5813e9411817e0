"""The per-workload agent behind ``shoal run`` (Istio's pilot-agent, in small).

Lifecycle:

0. start the local SDS server; with a token, obtain the workload certificate (bounded
   wait, so Envoy's listeners warm at once) and keep renewing it;
1. plan ports, write the bootstrap, start Envoy (supervised: restarted when it dies);
2. wait for Envoy to be LIVE (initial LDS/CDS received) — at most ``ready_timeout``,
   then start the app anyway, so a missing control plane never blocks the app;
3. start the app and wait until it listens on its port (bounded; then go on anyway);
4. register the workload *not ready* and heartbeat (retrying for ever while the control
   plane is away); once Envoy's inbound listener (which comes with the registration) is
   active, register it ready: only then do other sidecars get it as an endpoint;
5. on SIGTERM/SIGINT: deregister, drain Envoy's inbound listeners for ``drain_seconds``,
   stop the app (SIGTERM, SIGKILL after a grace), stop Envoy; exit 0.
   If the app exits on its own: deregister, stop Envoy, exit with the app's status.
   A second signal skips the remaining drain wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from shoal.agent import exposure
from shoal.agent.app import AppProcess, exit_status, prepare_socket_dir, sandbox_for
from shoal.agent.bootstrap import build_bootstrap
from shoal.agent.config import AgentConfig, Plan, app_env, control_plane_urls, make_plan
from shoal.agent.file_secrets import FileSecrets
from shoal.agent.identity import Svid, WorkloadIdentity, token_reader, token_subject
from shoal.agent.metrics import endpoint_for, own_service_ports
from shoal.agent.registration import (
    ControlPlaneClient,
    Registration,
    service_document,
    workload_document,
)
from shoal.agent.sds import SdsServer, socket_path
from shoal.agent.stats import reporter_for
from shoal.agent.supervisor import EnvoySupervisor, ProxyUserEnvoy
from shoal.ca.spiffe import SpiffeId
from shoal.envoy import EnvoyProcess, free_port
from shoal.errors import AgentError, Unavailable, ValidationError
from shoal.hosts import capture
from shoal.xds.node import CaptureMetadata, node_id, node_metadata
from shoal.xds.types import ProxyMetadata

log = logging.getLogger("shoal.agent")


def bootstrap_for(config: AgentConfig, plan: Plan, *, identity: bool = False
                  ) -> dict[str, object]:
    common = {"workload": plan.workload, "outbound_port": plan.outbound_port,
              "app_ports": {config.port_name: plan.app_port}, "upstreams": plan.upstreams,
              "admin_port": plan.admin_port}
    meta = CaptureMetadata(**common, dns_upstreams=config.dns_upstreams) \
        if config.capture else ProxyMetadata(**common, app_socket=str(plan.app_socket or ""))
    return build_bootstrap(
        node_id=node_id(plan.workload, config.namespace),
        cluster=config.service,
        metadata=node_metadata(meta, config.namespace),
        admin_port=plan.admin_port,
        xds_host=plan.xds_host,
        xds_port=plan.xds_port,
        more_xds=plan.more_xds,
        delta=config.xds_delta,
        locality_text=config.locality,
        sds_socket=str(socket_path(plan.envoy_dir)),
        xds_ca_file=str(config.ca_bundle.resolve()) if config.ca_bundle else "",
        client_cert=identity,
        dns_upstreams=config.dns_upstreams,  # only with capture (validate)
    )


def capture_spec(config: AgentConfig, plan: Plan) -> capture.CaptureSpec:
    """The iptables capture of this workload's pod: the app's port inbound; everything
    outbound but the sidecar's own traffic and the agent's calls to the control plane."""
    talks_to = [(plan.xds_host, plan.xds_port), *plan.more_xds]
    for url in control_plane_urls(config.control_plane):
        u = urlsplit(url)
        if u.hostname:
            talks_to.append((u.hostname, u.port or (443 if u.scheme == "https" else 80)))
    return capture.CaptureSpec(app_ports=(plan.app_port,), proxy_uid=config.proxy_uid,
                               exclude=capture.resolve_excludes(talks_to))


def identity_for(config: AgentConfig, token: str | None) -> str | None:
    """The SPIFFE ID the token is for, checked against --namespace/--service-account."""
    if not token:
        return None
    subject = token_subject(token)
    try:
        sid = SpiffeId.parse(subject)
    except ValidationError:
        raise AgentError(f"the token's subject {subject!r} is not a SPIFFE ID") from None
    sa = config.service_account or config.service
    if sid.namespace != config.namespace or sid.service_account != sa:
        raise AgentError(f"the token is for {subject}, but this workload is namespace "
                         f"{config.namespace!r}, service account {sa!r}")
    return subject


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        pick_port: Callable[[], int] = free_port,
        control_plane: ControlPlaneClient | None = None,
    ) -> None:
        self.config = config
        self.plan = make_plan(config, pick_port=pick_port)
        self.envoy = EnvoyProcess(
            self.plan.bootstrap_path,
            run_dir=self.plan.envoy_dir,
            log_level=config.envoy_log_level,
            drain_seconds=config.drain_seconds,
        ) if not config.capture else ProxyUserEnvoy(
            self.plan.bootstrap_path, uid=config.proxy_uid, run_dir=self.plan.envoy_dir,
            log_level=config.envoy_log_level, drain_seconds=config.drain_seconds)
        self.supervisor = EnvoySupervisor(self.envoy)
        self.app = AppProcess(config.command, app_env(config, self.plan, os.environ),
                              sandbox=sandbox_for(config, self.plan))
        read_token = token_reader(config.token, config.token_file)
        self.control_plane = control_plane or ControlPlaneClient(
            config.control_plane, token=read_token, ca_bundle=config.ca_bundle)
        spiffe_id = identity_for(config, read_token())
        self.identity = WorkloadIdentity(
            self.control_plane, spiffe_id, self.plan.workload,
            renew_fraction=config.renew_fraction) if spiffe_id else None
        self.sds = SdsServer(self.identity, socket_path(self.plan.envoy_dir),
                             files=FileSecrets(key_dirs=config.tls_key_dirs))
        if self.identity is not None:
            self.identity.subscribe(self._identity_changed)
        self.registration = Registration(
            self.control_plane,
            workload_document(config, self.plan, has_identity=self.identity is not None),
            service_document(config),
            ttl_seconds=config.lease_seconds,
            report=self._identity_report,
            on_bundle_version=self.identity.refresh_bundle if self.identity else None,
            until_ready=self._until_inbound_active,
        )
        self.stats = reporter_for(
            self.control_plane, admin_port=self.plan.admin_port, workload=self.plan.workload,
            namespace=config.namespace, service=config.service,
            generation=lambda: self.supervisor.restarts)
        self.metrics = endpoint_for(
            config, self.plan, self.identity, self.stats.latest,
            service_ports=own_service_ports(config.namespace, config.service,
                                            {config.port_name: config.port}),
            envoy_log=self.envoy.log_path)
        self._stop = asyncio.Event()
        self._signals = 0
        self._app_exit: int | None = None  # set when the app exited on its own

    # -- signals ---------------------------------------------------------------------
    def request_stop(self, reason: str = "requested") -> None:
        self._signals += 1
        if not self._stop.is_set():
            log.info("stopping", extra={"reason": reason})
        self._stop.set()

    def _install_signals(self) -> list[int]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        return installed

    # -- main ------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped or the app exits; returns the process exit status."""
        installed = self._install_signals()
        loop = asyncio.get_running_loop()
        try:
            return await self._run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.control_plane.aclose()

    def _identity_report(self) -> dict[str, object] | None:
        svid = self.identity.current if self.identity else None
        return svid.report() if svid else None

    def _identity_changed(self, svid: Svid) -> None:
        if self.plan.run_dir.exists():
            self._write_state()

    async def _run(self) -> int:
        self.plan.run_dir.mkdir(parents=True, exist_ok=True)
        if self.plan.app_socket is not None:  # before anything starts: a bad dir is fatal
            prepare_socket_dir(self.plan.app_socket)
        if isinstance(self.envoy, ProxyUserEnvoy):  # capture mode (docs/hosts.md)
            self.envoy.prepare()
            capture.apply(capture_spec(self.config, self.plan))
            log.info("traffic capture on", extra={"address": self.config.address,
                                                  "proxy_uid": self.config.proxy_uid})
        try:
            await self.sds.start()
            try:
                if self.config.capture:  # Envoy connects as the proxy uid
                    os.chown(self.sds.path, self.config.proxy_uid, self.config.proxy_uid)
                return await self._run_with_sds()
            finally:
                await self.sds.stop()
        finally:
            if self.config.capture:
                capture.remove()

    async def _run_with_sds(self) -> int:
        if self.identity is not None:
            await self.identity.initial(self.config.ready_timeout, self._stop.is_set)
        else:
            log.warning("no token (--token-file / $SHOAL_TOKEN): no workload certificate, "
                        "so mTLS with this workload will not work")
        self._write_bootstrap()
        self.envoy.start()
        log.info("envoy started", extra={
            "pid": self.envoy.pid, "workload": self.plan.workload,
            "admin_port": self.plan.admin_port, "outbound_port": self.plan.outbound_port,
            "inbound_port": self.plan.inbound_port, "app_port": self.plan.app_port,
            "run_dir": str(self.plan.run_dir)})
        try:
            async with asyncio.TaskGroup() as tg:
                supervisor = tg.create_task(self.supervisor.run(), name="envoy-supervisor")
                renewer = tg.create_task(self.identity.run(), name="identity") \
                    if self.identity is not None else None
                try:
                    status = await self._lifecycle(tg)
                finally:
                    supervisor.cancel()
                    if renewer is not None:
                        renewer.cancel()
            return status
        finally:
            if self.app.started:
                await self.app.stop(self.config.stop_grace)
            await self.envoy.astop()
            log.info("stopped", extra={"envoy_restarts": self.supervisor.restarts})

    def _write_bootstrap(self) -> None:
        """Write the bootstrap and ``agent.json`` (ports and names, for tools and humans)."""
        self.plan.run_dir.mkdir(parents=True, exist_ok=True)
        doc = bootstrap_for(self.config, self.plan, identity=self.identity is not None)
        tmp = self.plan.bootstrap_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.plan.bootstrap_path)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "agentPid": os.getpid(), "workload": self.plan.workload,
            "namespace": self.config.namespace, "service": self.config.service,
            "nodeId": node_id(self.plan.workload, self.config.namespace),
            "adminPort": self.plan.admin_port, "outboundPort": self.plan.outbound_port,
            "inboundPort": self.plan.inbound_port, "appPort": self.plan.app_port,
            "upstreams": {f"{u.host}:{u.port}": u.local_port for u in self.plan.upstreams},
            "sdsSocket": str(self.sds.path), "identity": self._identity_report(),
            "capture": self.config.capture, "address": self.config.address,
            "envoyDir": str(self.plan.envoy_dir),
            "metricsPort": self.plan.metrics_port if self.metrics.enabled else 0,
        }
        tmp = self.plan.run_dir / "agent.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.plan.run_dir / "agent.json")

    async def _lifecycle(self, tg: asyncio.TaskGroup) -> int:
        await self._wait_envoy_live()
        if self._stop.is_set():
            return 0
        socket = self.plan.app_socket  # --app-socket: the app has no TCP port
        self.app.start()
        app_waiter = tg.create_task(self._watch_app(), name="app-waiter")
        listening = await self.app.wait_listening(
            "127.0.0.1", self.plan.app_port, self.config.app_start_timeout, self._stop.is_set,
            socket=socket)
        if not listening and not self._stop.is_set():
            log.warning("application is not listening yet; registering anyway", extra={
                "app_port": self.plan.app_port, "app_socket": str(socket or ""),
                "waited_s": self.config.app_start_timeout})
        heartbeat: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        stats = tg.create_task(self.stats.run(), name="stats")
        metrics = tg.create_task(self.metrics.run(), name="metrics")
        if not self._stop.is_set():
            heartbeat = tg.create_task(self.registration.run(), name="registration")
            if not self.config.capture and socket is None:  # app port on the loopback
                watcher = tg.create_task(exposure.watch(
                    self.plan.admin_port, self.plan.inbound_port,
                    f"{self.config.namespace}/{self.plan.workload}", self.plan.app_port),
                    name="exposure")
        await self._stop.wait()
        if watcher is not None:
            watcher.cancel()
        stats.cancel()
        metrics.cancel()
        await self.stats.final()
        return await self._shutdown(heartbeat, app_waiter)

    async def _watch_app(self) -> None:
        code = await self.app.wait_exit()
        if not self._stop.is_set():
            self._app_exit = exit_status(code)
            log.warning("application exited", extra={"exit_status": self._app_exit})
            self._stop.set()

    async def _until_inbound_active(self) -> None:
        """Until Envoy's inbound listener is active, so peers sent here are not refused
        (its config comes with the registration). Bounded by ``ready_timeout``: then the
        workload is declared ready anyway, as before readiness existed."""
        port = (CaptureMetadata.inbound_capture_port if self.config.capture
                else self.plan.inbound_port)
        deadline = time.monotonic() + self.config.ready_timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if await self.envoy.listens_on(port, client):
                    return
                await asyncio.sleep(0.05)
        log.warning("inbound listener not active; declaring the workload ready anyway",
                    extra={"port": port, "waited_s": self.config.ready_timeout})

    async def _wait_envoy_live(self) -> None:
        """Wait for LIVE, logging progress; give up after ``ready_timeout`` (never fatal)."""
        deadline = time.monotonic() + self.config.ready_timeout
        next_report = time.monotonic() + 5.0
        state: str | None = None
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while not self._stop.is_set():
                state = await self.envoy.server_state(client)
                if state == "LIVE":
                    log.info("envoy is live", extra={"pid": self.envoy.pid})
                    return
                now = time.monotonic()
                if now >= deadline:
                    log.warning("envoy is not live yet (control plane unreachable?); "
                                "starting the application anyway", extra={
                                    "state": state, "xds": self.config.xds,
                                    "waited_s": self.config.ready_timeout})
                    return
                if now >= next_report:
                    next_report = now + 5.0
                    log.info("waiting for envoy to receive its config", extra={
                        "state": state, "xds": self.config.xds})
                await asyncio.sleep(0.1)

    async def _shutdown(
        self, heartbeat: asyncio.Task[None] | None, app_waiter: asyncio.Task[None]
    ) -> int:
        if heartbeat is not None:
            heartbeat.cancel()
            await self.registration.deregister()
        if self._app_exit is None and self.app.poll() is None:
            await self._drain()
            code = await self.app.stop(self.config.stop_grace)
            log.info("application stopped", extra={"returncode": code})
        app_waiter.cancel()
        return self._app_exit if self._app_exit is not None else 0

    async def _drain(self) -> None:
        """Stop taking new inbound connections, give in-flight requests time to finish."""
        try:
            await self.envoy.admin_post("/drain_listeners?graceful&inboundonly")
            log.info("draining inbound listeners", extra={
                "drain_s": self.config.drain_seconds})
        except Unavailable as e:
            log.warning("could not drain envoy", extra={"error": str(e)})
        signals = self._signals
        deadline = time.monotonic() + self.config.drain_seconds
        while time.monotonic() < deadline and self._signals == signals:
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
