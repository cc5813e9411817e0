"""Registering the workload with the control plane and keeping its lease alive.

The control plane may be down at start or go away later: :class:`Registration` keeps
retrying with capped back-off and never gives up (the app and Envoy keep running; Envoy
keeps its last config). A 404 on heartbeat means the lease expired: register again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx

from shoal.agent.backoff import Backoff
from shoal.agent.config import AgentConfig, Plan, control_plane_urls
from shoal.errors import AgentError, Unavailable
from shoal.registry.snapshot import READY_ANNOTATION, TLS_MODE_LABEL
from shoal.telemetry.report import STATS_PATH
from shoal.telemetry.scrape import METRICS_PORT_ANNOTATION

log = logging.getLogger("shoal.agent.registration")

API_VERSION = "mesh.shoal.io/v1alpha1"


def not_ready(workload: Mapping[str, Any]) -> dict[str, Any]:
    """``workload`` marked not ready: registered, but peers are not sent to it yet."""
    meta = dict(workload["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), READY_ANNOTATION: "false"}
    return {**workload, "metadata": meta}


def workload_document(config: AgentConfig, plan: Plan, *, has_identity: bool = True
                      ) -> dict[str, Any]:
    """The Workload this agent registers. Without an identity (no token, so no
    certificate) its sidecar cannot accept mTLS: it says so, and peers send plaintext;
    and it serves no metrics endpoint (shoal.agent.metrics), so it registers none."""
    tls_mode = {} if has_identity else {TLS_MODE_LABEL: "disabled"}
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {
            "name": plan.workload,
            "namespace": config.namespace,
            "annotations": {"shoal.io/registered-by": "agent",
                            **metrics_annotation(plan.metrics_port if has_identity else 0)},
        },
        "spec": {
            "address": config.address,
            "labels": {"app": config.service, **dict(config.labels), **tls_mode},
            "ports": {config.port_name: plan.inbound_port},
            "serviceAccount": config.service_account or config.service,
            "locality": config.locality,
        },
    }


def metrics_annotation(port: int) -> dict[str, str]:
    """Where Prometheus finds the agent's metrics endpoint (shoal.telemetry.discovery);
    nothing when it serves none (port 0)."""
    return {METRICS_PORT_ANNOTATION: str(port)} if port else {}


def service_document(config: AgentConfig) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": {"name": config.service, "namespace": config.namespace},
        "spec": {
            "selector": {"app": config.service},
            "ports": [{"name": config.port_name, "port": config.port,
                       "protocol": config.protocol}],
        },
    }


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_line(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text.strip()[:200]}"
    msg = str(body.get("error") or f"HTTP {r.status_code}")
    violations = body.get("violations") or []
    if violations:
        msg += " (" + "; ".join(f"{v.get('path')}: {v.get('message')}" for v in violations) + ")"
    return f"HTTP {r.status_code}: {msg}"


class Refused(AgentError):
    """The control plane refused the agent's credential (HTTP 401/403): retrying with the
    same token cannot help."""


T = TypeVar("T")
CERT_MARGIN = 30.0  # seconds before its expiry a certificate stops being presented


def load_identity(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Load a client certificate and key into CTX from memory (memfd; Linux)."""
    fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("svid-chain", "svid-key")]
    try:
        for fd, data in zip(fds, (chain_pem, key_pem), strict=True):
            os.write(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)


def tls_context(ca_bundle: Path) -> ssl.SSLContext:
    """Verify the control plane against the mesh trust bundle (not the system CAs)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as e:
        raise AgentError(f"--ca-bundle {ca_bundle}: {e}") from None
    return ctx


class ControlPlaneClient:
    """The agent's REST calls. Network failures raise :class:`Unavailable`;
    refusals raise :class:`AgentError` with the server's one-line reason.

    ``token`` is called before each request (a token file may be replaced while the
    agent runs); ``ca_bundle`` makes the client verify an https:// control plane against
    the mesh roots, extended by :meth:`trust` when the bundle changes.

    Once the agent holds a workload certificate (:meth:`present`), calls over TLS
    authenticate with it (mTLS) instead of the token: the token is only needed to obtain
    the first certificate, so it can be short-lived (ADR 0022)."""

    def __init__(self, base_url: str, client: httpx.AsyncClient | None = None, *,
                 token: Callable[[], str | None] | None = None,
                 ca_bundle: Path | None = None) -> None:
        # ``URL[,URL...]``: several control-plane instances sharing one store (HA). Calls
        # go to the current one; a connection failure moves on to the next, in order.
        self.urls = control_plane_urls(base_url) or [base_url.rstrip("/")]
        self._current = 0
        self._token = token or (lambda: None)
        self._ssl = tls_context(ca_bundle) if ca_bundle is not None else None
        self._owns_client = client is None
        self._client = client or self._new_client()
        self._stale: list[httpx.AsyncClient] = []
        self._session: aiohttp.ClientSession | None = None  # for _post_often
        self._stale_sessions: list[aiohttp.ClientSession] = []
        self._cert_until = 0.0  # time.time() until which the presented certificate is valid

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=5.0, trust_env=False, verify=self._ssl if self._ssl is not None else True)

    def present(self, chain: list[str], key_pem: bytes, not_after: float) -> None:
        """Authenticate with this workload certificate from now on (TLS only). The key
        goes to the TLS library through an anonymous in-memory file, never to disk."""
        if self._ssl is None or not self._owns_client:
            return
        load_identity(self._ssl, "".join(chain).encode(), key_pem)
        self._cert_until = not_after
        self._stale.append(self._client)  # pooled connections were made without it
        self._client = self._new_client()
        if self._session is not None:
            self._stale_sessions.append(self._session)
            self._session = None

    @property
    def base_url(self) -> str:
        """The instance calls go to now."""
        return self.urls[self._current]

    async def aclose(self) -> None:
        await self._close_stale()
        await self._client.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _close_stale(self) -> None:
        while self._stale:
            await self._stale.pop().aclose()
        while self._stale_sessions:
            await self._stale_sessions.pop().close()

    def trust(self, pems: list[str]) -> None:
        """Also trust these roots from now on (a rotated trust bundle)."""
        if self._ssl is not None and pems:
            self._ssl.load_verify_locations(cadata="".join(pems))

    def _auth_headers(self) -> dict[str, str]:
        # the current certificate speaks for the workload; the token only without one
        token = None if time.time() < self._cert_until - CERT_MARGIN else self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _failover(self, send: Callable[[str], Awaitable[T]],
                        unreachable: tuple[type[BaseException], ...]) -> T:
        """``send(base_url)`` to the current instance; when it is unreachable, to the next
        one, in order (HA), until every instance has been tried."""
        errors: list[str] = []
        for _ in self.urls:
            base = self.base_url
            try:
                return await send(base)
            except unreachable as e:  # try the next instance
                errors.append(f"{base}: {type(e).__name__}: {e}")
                self._current = (self._current + 1) % len(self.urls)
                if len(self.urls) > 1:
                    log.warning("control plane unreachable, trying the next one", extra={
                        "failed": base, "next": self.base_url, "error": str(e)})
        raise Unavailable("control plane " + "; ".join(errors))

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        await self._close_stale()
        kw["headers"] = {**kw.get("headers", {}), **self._auth_headers()}

        async def send(base: str) -> httpx.Response:
            try:
                return await self._client.request(method, base + path, **kw)
            except httpx.TransportError:
                raise
            except httpx.HTTPError as e:
                raise Unavailable(f"control plane {base}: {type(e).__name__}: {e}") from e

        r = await self._failover(send, (httpx.TransportError,))
        if r.status_code in (401, 403):
            raise Refused(f"{method} {path} refused: {_error_line(r)}")
        return r

    async def _post_often(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """A POST made every second (stats reports), over aiohttp: ~0.3 ms of CPU where
        httpx took ~1.3 ms. Same credentials, failover and refusals as :meth:`_call`."""
        if not self._owns_client:  # a client given by the caller (tests): use it
            r = await self._call("POST", path, json=dict(body))
            return r.status_code, _json_or_none(r.text)
        await self._close_stale()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=5.0),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None
                                               else True))
        session, headers = self._session, self._auth_headers()

        async def send(base: str) -> tuple[int, str]:
            async with session.post(base + path, json=dict(body), headers=headers) as r:
                return r.status, await r.text()

        status, text = await self._failover(send, (aiohttp.ClientConnectionError,
                                                   TimeoutError))
        if status in (401, 403):
            raise Refused(f"POST {path} refused: {status} {text[:200]}")
        return status, _json_or_none(text)

    async def sign(self, csr_pem: str, workload: str) -> dict[str, Any]:
        """Ask the CA for a certificate: {certChain, trustBundle, expiresAt, serial...}."""
        r = await self._call("POST", "/api/v1/certificates",
                             json={"csr": csr_pem, "workload": workload})
        if r.status_code != 200:
            raise AgentError(f"certificate request refused: {_error_line(r)}")
        return dict(r.json())

    async def trust_bundle(self) -> dict[str, Any]:
        r = await self._call("GET", "/api/v1/ca/bundle")
        if r.status_code != 200:
            raise AgentError(f"trust bundle request failed: {_error_line(r)}")
        return dict(r.json())

    async def register(
        self, workload: Mapping[str, Any], service: Mapping[str, Any] | None, ttl: int
    ) -> float:
        """Register; returns the lease in seconds."""
        body = {"workload": workload, "service": service, "ttlSeconds": ttl}
        r = await self._call("POST", "/api/v1/workloads", json=body)
        if r.status_code != 200:
            raise AgentError(f"registration refused: {_error_line(r)}")
        return float(r.json().get("leaseSeconds") or ttl)

    async def heartbeat(self, namespace: str, name: str,
                        report: Mapping[str, Any] | None = None) -> float | None:
        """Renew the lease; returns it, or None when the control plane does not know the
        workload (404). ``report`` (the agent's identity) goes in the body; the trust
        bundle version of the answer is kept in :attr:`bundle_version`."""
        kw: dict[str, Any] = {"json": {"identity": dict(report)}} if report else {}
        r = await self._call("PUT", f"/api/v1/workloads/{namespace}/{name}/heartbeat", **kw)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise AgentError(f"heartbeat refused: {_error_line(r)}")
        try:
            body = r.json()
            self.bundle_version = str(body.get("bundleVersion") or "")
            return float(body.get("leaseSeconds") or 0) or 15.0
        except ValueError:
            return 15.0

    bundle_version: str = ""

    async def report_stats(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """Send the proxy's per-edge counters (shoal.telemetry.report); the answer says
        whether the control plane wants every row next time (``resync``)."""
        status, body = await self._post_often(STATS_PATH, report)
        if status != 200:
            why = body.get("error") if isinstance(body, dict) else None
            raise AgentError(f"stats report refused: {status} {why or ''}".rstrip())
        return body if isinstance(body, dict) else {}

    async def deregister(self, namespace: str, name: str) -> None:
        r = await self._call("DELETE", f"/api/v1/workloads/{namespace}/{name}")
        if r.status_code not in (200, 204, 404):
            raise AgentError(f"deregistration refused: {_error_line(r)}")


class Registration:
    """Register, then heartbeat every lease/3 until cancelled; re-register on 404."""

    def __init__(
        self,
        client: ControlPlaneClient,
        workload: Mapping[str, Any],
        service: Mapping[str, Any] | None,
        *,
        ttl_seconds: int = 15,
        backoff: Backoff | None = None,
        report: Callable[[], Mapping[str, Any] | None] | None = None,
        on_bundle_version: Callable[[str], Awaitable[None]] | None = None,
        until_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``until_ready``: register the workload not ready first, and ready once this
        returns (the sidecar can take the peers' connections)."""
        self.ready_workload = workload
        if until_ready is not None:
            workload = not_ready(workload)
        self.until_ready = until_ready
        self.report = report or (lambda: None)
        self.on_bundle_version = on_bundle_version
        self.client = client
        self.workload = workload
        self.service = service
        self.ttl = ttl_seconds
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.namespace = str(workload["metadata"]["namespace"])
        self.name = str(workload["metadata"]["name"])
        self.registrations = 0
        self.heartbeats = 0

    async def _register_until_done(self) -> float:
        while True:
            try:
                lease = await self.client.register(self.workload, self.service, self.ttl)
            except (Unavailable, AgentError) as e:
                delay = self.backoff.next()
                log.warning("registration failed, retrying", extra={
                    "error": str(e), "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            self.registrations += 1
            log.info("registered with the control plane", extra={
                "workload": f"{self.namespace}/{self.name}", "lease_s": lease,
                "registrations": self.registrations})
            return lease

    async def run(self) -> None:
        lease = await self._register_until_done()
        async with asyncio.TaskGroup() as tg:
            if self.until_ready is not None:
                tg.create_task(self._become_ready(), name="readiness")
            tg.create_task(self._heartbeats(lease), name="heartbeats")

    async def _become_ready(self) -> None:
        assert self.until_ready is not None
        await self.until_ready()
        self.workload = self.ready_workload  # re-registrations from now on say ready too
        await self._register_until_done()
        log.info("workload ready: peers are sent to it",
                 extra={"workload": f"{self.namespace}/{self.name}"})

    async def _heartbeats(self, lease: float) -> None:
        wait = max(0.2, lease / 3)
        while True:
            await asyncio.sleep(wait)
            try:
                renewed = await self.client.heartbeat(self.namespace, self.name,
                                                      self.report())
            except (Unavailable, AgentError) as e:
                wait = min(self.backoff.next(), max(0.2, lease / 3))
                log.warning("heartbeat failed, retrying", extra={
                    "error": str(e), "retry_in_s": round(wait, 2)})
                continue
            self.backoff.reset()
            if renewed is None:
                log.warning("control plane does not know this workload; registering again",
                            extra={"workload": f"{self.namespace}/{self.name}"})
                lease = await self._register_until_done()
            else:
                self.heartbeats += 1
                lease = renewed
                if self.on_bundle_version and self.client.bundle_version:
                    await self.on_bundle_version(self.client.bundle_version)
            wait = max(0.2, lease / 3)

    async def deregister(self, timeout: float = 3.0) -> bool:
        """Best effort: True if the control plane confirmed (or never knew the workload)."""
        try:
            await asyncio.wait_for(self.client.deregister(self.namespace, self.name), timeout)
        except (TimeoutError, Unavailable, AgentError) as e:
            log.warning("deregistration failed", extra={"error": str(e)})
            return False
        log.info("deregistered", extra={"workload": f"{self.namespace}/{self.name}"})
        return True
