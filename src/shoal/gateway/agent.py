"""``shoal gateway run``: the agent machinery of ``shoal run``, without an application.

The gateway registers a Workload (labels for Gateway selectors; annotations saying it is a
gateway, which ports it may bind and which TLS credentials it holds), gets a workload
certificate like any sidecar (so it speaks mesh mTLS upstream) and runs an Envoy whose
listeners and routes come from the control plane. TLS credentials
(``--credential NAME=CERT,KEY[,CA]``, or ``--cert``/``--key``[/``--ca-cert``] named by
``--credential-name``) are static secrets in the bootstrap: ``NAME`` holds the certificate
and key, ``NAME-cacert`` the CA that MUTUAL servers verify client certificates against. A
Gateway server's ``tls.credentialName`` refers to ``NAME``. Private keys never leave the
gateway's host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shoal.agent.agent import bootstrap_for, identity_for
from shoal.agent.config import AgentConfig, make_plan
from shoal.agent.file_secrets import FileSecrets
from shoal.agent.identity import WorkloadIdentity, token_reader
from shoal.agent.metrics import endpoint_for
from shoal.agent.registration import (
    API_VERSION,
    ControlPlaneClient,
    Registration,
    metrics_annotation,
)
from shoal.agent.sds import SdsServer, socket_path
from shoal.agent.stats import reporter_for
from shoal.agent.supervisor import EnvoySupervisor
from shoal.api.gateway import (
    CREDENTIALS_ANNOTATION,
    GATEWAY_ANNOTATION,
    PORTS_ANNOTATION,
    ca_secret,
)
from shoal.envoy import EnvoyProcess, free_port
from shoal.errors import AgentError, Unavailable

log = logging.getLogger("shoal.gateway")


@dataclass(frozen=True)
class Credential:
    name: str
    cert: Path
    key: Path
    ca: Path | None = None  # client certificates' CA, for MUTUAL / OPTIONAL_MUTUAL

    def secret_names(self) -> list[str]:
        return [self.name, *([ca_secret(self.name)] if self.ca is not None else [])]


def parse_credential(text: str) -> Credential:
    """``NAME=CERT,KEY[,CA]`` (the ``--credential`` flag)."""
    name, sep, files = text.partition("=")
    parts = files.split(",") if files else []
    if not sep or not name or len(parts) not in (2, 3) or not all(parts):
        raise AgentError(f"--credential {text!r}: expected NAME=CERT,KEY[,CA]")
    return Credential(name, Path(parts[0]), Path(parts[1]),
                      Path(parts[2]) if len(parts) == 3 else None)


@dataclass(frozen=True)
class GatewayConfig:
    agent: AgentConfig  # service = the gateway's name; command unused
    ports: tuple[int, ...]
    credentials: tuple[Credential, ...] = ()


def workload_document(config: GatewayConfig, workload: str, metrics_port: int = 0
                      ) -> dict[str, Any]:
    """``metrics_port``: where its metrics endpoint is served (0: none)."""
    a = config.agent
    annotations = {"shoal.io/registered-by": "agent", GATEWAY_ANNOTATION: a.service,
                   PORTS_ANNOTATION: ",".join(str(p) for p in config.ports),
                   **metrics_annotation(metrics_port)}
    if config.credentials:
        annotations[CREDENTIALS_ANNOTATION] = ",".join(
            n for c in config.credentials for n in c.secret_names())
    return {
        "apiVersion": API_VERSION, "kind": "Workload",
        "metadata": {"name": workload, "namespace": a.namespace, "annotations": annotations},
        "spec": {"address": a.address, "labels": {"app": a.service, **dict(a.labels)},
                 "serviceAccount": a.service_account or a.service, "locality": a.locality},
    }


def static_secrets(credentials: tuple[Credential, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in credentials:
        out.append({"name": c.name, "tls_certificate": {
            "certificate_chain": {"filename": str(c.cert.resolve())},
            "private_key": {"filename": str(c.key.resolve())}}})
        if c.ca is not None:
            out.append({"name": ca_secret(c.name), "validation_context": {
                "trusted_ca": {"filename": str(c.ca.resolve())}}})
    return out


def validate(config: GatewayConfig) -> None:
    if not config.ports:
        raise AgentError("a gateway needs at least one port (--port / --https-port)")
    for c in config.credentials:
        for f in (c.cert, c.key, *([c.ca] if c.ca is not None else [])):
            if not f.is_file():
                raise AgentError(f"credential {c.name!r}: no such file {f}")
    names = [c.name for c in config.credentials]
    if len(set(names)) != len(names):
        raise AgentError("credential names must be unique")


class GatewayAgent:
    def __init__(self, config: GatewayConfig) -> None:
        validate(config)
        self.config = config
        a = config.agent
        plan = make_plan(a, pick_port=free_port)
        # no app, no outbound proxy port: the gateway's listeners are its servers
        self.plan = dataclasses.replace(plan, outbound_port=0)
        self.envoy = EnvoyProcess(self.plan.bootstrap_path, run_dir=self.plan.run_dir,
                                  log_level=a.envoy_log_level, drain_seconds=a.drain_seconds)
        self.supervisor = EnvoySupervisor(self.envoy)
        read_token = token_reader(a.token, a.token_file)
        self.control_plane = ControlPlaneClient(a.control_plane, token=read_token,
                                                ca_bundle=a.ca_bundle)
        spiffe = identity_for(a, read_token())
        self.identity = WorkloadIdentity(self.control_plane, spiffe, self.plan.workload,
                                         renew_fraction=a.renew_fraction) if spiffe else None
        self.sds = SdsServer(self.identity, socket_path(self.plan.run_dir),
                             files=FileSecrets(key_dirs=a.tls_key_dirs))
        self.stats = reporter_for(
            self.control_plane, admin_port=self.plan.admin_port, workload=self.plan.workload,
            namespace=a.namespace, service=a.service,
            generation=lambda: self.supervisor.restarts)
        # a gateway has no Service of its own: destination-side series carry port 0, as
        # on the control plane's /metrics
        self.metrics = endpoint_for(a, self.plan, self.identity, self.stats.latest,
                                    envoy_log=self.envoy.log_path)
        self.registration = Registration(
            self.control_plane, workload_document(
                config, self.plan.workload,
                self.plan.metrics_port if self.metrics.enabled else 0), None,
            ttl_seconds=a.lease_seconds,
            on_bundle_version=self.identity.refresh_bundle if self.identity else None)
        self._stop = asyncio.Event()

    def _write_bootstrap(self) -> None:
        self.plan.run_dir.mkdir(parents=True, exist_ok=True)
        doc = bootstrap_for(self.config.agent, self.plan, identity=self.identity is not None)
        doc["static_resources"]["secrets"] = static_secrets(self.config.credentials)
        self.plan.bootstrap_path.write_text(json.dumps(doc, indent=2))
        state = {"workload": self.plan.workload, "namespace": self.config.agent.namespace,
                 "adminPort": self.plan.admin_port, "ports": list(self.config.ports),
                 "metricsPort": self.plan.metrics_port if self.metrics.enabled else 0}
        (self.plan.run_dir / "agent.json").write_text(json.dumps(state, indent=2))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        self.plan.run_dir.mkdir(parents=True, exist_ok=True)
        await self.sds.start()
        try:
            if self.identity is not None:
                await self.identity.initial(self.config.agent.ready_timeout, self._stop.is_set)
            self._write_bootstrap()
            self.envoy.start()
            log.info("gateway envoy started", extra={
                "pid": self.envoy.pid, "workload": self.plan.workload,
                "ports": list(self.config.ports), "admin_port": self.plan.admin_port})
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.supervisor.run())]
                if self.identity is not None:
                    tasks.append(tg.create_task(self.identity.run()))
                await self._wait_live()
                tasks.append(tg.create_task(self.registration.run()))
                tasks.append(tg.create_task(self.stats.run()))
                tasks.append(tg.create_task(self.metrics.run()))
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
                await self.stats.final()
            await self.registration.deregister()
            try:
                await self.envoy.admin_post("/drain_listeners?graceful")
                await asyncio.sleep(self.config.agent.drain_seconds)
            except Unavailable:
                pass
            return 0
        finally:
            await self.envoy.astop()
            await self.sds.stop()
            await self.control_plane.aclose()

    async def _wait_live(self) -> None:
        deadline = time.monotonic() + self.config.agent.ready_timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if await self.envoy.server_state(client) == "LIVE":
                    log.info("gateway envoy is live")
                    return
                await asyncio.sleep(0.1)
