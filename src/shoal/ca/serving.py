"""The control plane's own TLS certificate (agent REST API and secure xDS), issued by its
CA and renewed at half its lifetime; also reissued at once when its root is pruned.

aiohttp takes an ``ssl.SSLContext`` that is reloaded in place (new handshakes see the
new certificate); gRPC takes dynamic credentials whose fetcher returns the new config.
The gRPC (secure xDS) port requires a client certificate chaining to the trust bundle:
only mesh workloads connect there (docs/adr/0020-xds-peer-identity.md).
The same certificate is the control plane's client certificate where it calls agents
(their access logs, shoal.telemetry.agent_logs): :meth:`ServingCertificate.client_context`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

import grpc

from shoal.ca import pki
from shoal.ca.authority import CertificateAuthority, Issued
from shoal.ca.files import write_private
from shoal.ca.grpc_tls import ReloadingServerCredentials
from shoal.netaddr import is_ip

log = logging.getLogger("shoal.ca.serving")
SERVER_NAME = "shoal-control-plane"



class ServingCertificate:
    def __init__(self, ca: CertificateAuthority, hosts: Sequence[str] = ()):
        self._ca = ca
        names = [SERVER_NAME, "localhost", "127.0.0.1", *hosts]
        self.dns = list(dict.fromkeys(h for h in names if h and not is_ip(h)))
        self.ips = list(dict.fromkeys(h for h in names if is_ip(h) and h != "0.0.0.0"))
        self.cert_path = ca.files.serving_dir / "cert.pem"
        self.key_path = ca.files.serving_dir / "key.pem"
        self._ssl: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None  # client_context(), until it changes
        self._grpc = ReloadingServerCredentials(self._grpc_config)
        self._issued: Issued | None = None
        self._key_pem = b""
        self._wake = asyncio.Event()
        ca.listeners.append(self._bundle_changed)
        self.issue()

    @property
    def current(self) -> Issued:
        assert self._issued is not None
        return self._issued

    def issue(self) -> None:
        key = pki.new_key()
        self._issued = self._ca.issue_server(key.public_key(), dns=self.dns, ips=self.ips)
        self._key_pem = pki.key_pem(key)
        self._issued_at = pki.now()
        self._ca.files.ensure()
        write_private(self.key_path, self._key_pem)
        write_private(self.cert_path, "".join(self._issued.chain).encode())
        if self._ssl is not None:
            self._ssl.load_cert_chain(self.cert_path, self.key_path)
        self._client = None
        self._grpc.changed()
        log.info("control plane serving certificate issued", extra={
            "serial": format(self._issued.cert.serial_number, "x"),
            "not_after": self._issued.cert.not_valid_after_utc.isoformat()})

    def _bundle_changed(self) -> None:
        """Keep serving after a rotation (agents learn the new root first); reissue at once
        when the current issuer left the bundle (prune)."""
        self._grpc.changed()  # client-CA list of gRPC changes either way
        self._client = None
        if self._ssl is not None:  # a new root verifies agents' certificates at once
            self._ssl.load_verify_locations(cadata="".join(self._ca.bundle_pem()))
        issuer = self.current.cert.issuer
        if not any(r.subject == issuer for r in self._ca.trust_bundle()):
            self.issue()
        self._wake.set()

    def ssl_context(self) -> ssl.SSLContext:
        """The agent REST listener's context. A client certificate is asked for but not
        required: an agent with a workload certificate renews it and heartbeats with it
        (mTLS); one without presents its token (shoal.ca.rest.IdentityApi.authenticate)."""
        if self._ssl is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cert_path, self.key_path)
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata="".join(self._ca.bundle_pem()))
            self._ssl = ctx
        return self._ssl

    def client_context(self) -> ssl.SSLContext:
        """TLS client context presenting this certificate (its DNS SAN
        :data:`SERVER_NAME`, no URI SAN: the control plane, never a workload) and trusting
        the mesh roots; the servers' names are checked (the caller sets the one expected).
        A new one after each renewal or trust-bundle change: take it per connection."""
        if self._client is None:
            ctx = ssl.create_default_context(cadata="".join(self._ca.bundle_pem()))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cert_path, self.key_path)
            self._client = ctx
        return self._client

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._key_pem, "".join(self.current.chain).encode())],
            root_certificates="".join(self._ca.bundle_pem()).encode())

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """TLS for the secure xDS port: this certificate, and a client certificate issued
        under the trust bundle is required (the handshake fails without one)."""
        return self._grpc.credentials()

    async def run(self) -> None:
        """Renew at half of the remaining lifetime, for ever."""
        while True:
            lifetime = (self.current.cert.not_valid_after_utc - self._issued_at).total_seconds()
            elapsed = (pki.now() - self._issued_at).total_seconds()
            wait = max(1.0, lifetime / 2 - elapsed)
            self._wake.clear()
            try:  # asyncio.timeout: 3.11's wait_for can swallow a cancellation (sync.py)
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                continue
            except TimeoutError:
                pass
            self.issue()
