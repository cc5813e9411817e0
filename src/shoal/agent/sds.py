"""The agent's local SDS server: Envoy fetches its workload certificate ("default") and
the trust bundle ("ROOTCA") over gRPC on a Unix socket in the run directory (mode 0600).

State of the world: each stream says which secret names it wants; it gets them at once
if known, and again whenever the identity changes (renewal, bundle rotation). The
server outlives Envoy restarts: a new Envoy simply opens new streams.

It also serves the certificate files of TLS origination (``file-cert:...`` /
``file-root:...`` names, see :mod:`shoal.agent.file_secrets`), with or without a workload
identity. A secret that cannot be served is not answered (Envoy keeps the cluster
warming; an empty answer would be a NACK), and the files are polled for changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from shoal.agent.file_secrets import FileSecrets
from shoal.agent.identity import Svid, WorkloadIdentity
from shoal.errors import AgentError
from shoal.xds.types import SECRET, SECRET_ROOT_CA, SECRET_WORKLOAD_CERT

log = logging.getLogger("shoal.agent.sds")
MAX_UNIX_PATH = 100
FILE_POLL_SECONDS = 2.0


def socket_path(run_dir: Path) -> Path:
    """``<run_dir>/sds.sock``, or a short path in the temp dir if that one is too long."""
    path = run_dir / "sds.sock"
    if len(str(path)) <= MAX_UNIX_PATH:
        return path
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"shoal-sds-{digest}.sock"


def secrets_of(svid: Svid) -> dict[str, secret_pb2.Secret]:
    cert = secret_pb2.Secret(name=SECRET_WORKLOAD_CERT, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes="".join(svid.chain).encode()),
        private_key=base_pb2.DataSource(inline_bytes=svid.key_pem)))
    roots = secret_pb2.Secret(name=SECRET_ROOT_CA, validation_context=(
        common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes="".join(svid.bundle).encode()))))
    return {SECRET_WORKLOAD_CERT: cert, SECRET_ROOT_CA: roots}


class _Stream:
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.wake = asyncio.Event()
        self.sent_version = ""
        self.sent_names: frozenset[str] = frozenset()
        self.closed = False


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, identity: WorkloadIdentity | None, path: Path,
                 files: FileSecrets | None = None,
                 file_poll_seconds: float = FILE_POLL_SECONDS):
        self._identity = identity  # None: no token, no workload certificate (Envoy waits)
        self.path = path
        self.files = files if files is not None else FileSecrets()
        self._file_poll_seconds = file_poll_seconds
        self._streams: set[_Stream] = set()
        self._server: grpc.aio.Server | None = None
        self._poller: asyncio.Task[None] | None = None
        self.pushes = 0
        if identity is not None:
            identity.subscribe(self._changed)

    def _changed(self, svid: Svid | None = None) -> None:
        for s in self._streams:
            s.wake.set()

    async def _poll_files(self) -> None:
        """Re-read changed certificate files and push them to the streams that want them."""
        while True:
            await asyncio.sleep(self._file_poll_seconds)
            wanted = {n for s in self._streams for n in s.names}
            try:
                self.files.forget(wanted)
                changed = self.files.refresh()
            except Exception:  # never stop polling: log and try again next round
                log.exception("checking certificate files failed")
                continue
            for s in self._streams:
                if s.names & changed:
                    s.wake.set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        old = os.umask(0o177)
        try:
            if server.add_insecure_port(f"unix:{self.path}") == 0:
                raise AgentError(f"cannot listen for SDS on {self.path}")
            await server.start()
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._server = server
        self._poller = asyncio.create_task(self._poll_files(), name="sds-file-poller")
        log.info("SDS server listening", extra={"path": str(self.path)})

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                    stream: _Stream) -> None:
        try:
            async for req in requests:
                if req.error_detail.message:
                    log.error("Envoy rejected a secret (NACK)", extra={
                        "error": req.error_detail.message, "version": req.version_info})
                if req.type_url and req.type_url != SECRET:
                    continue
                names = set(req.resource_names)
                if names != stream.names or not req.response_nonce:
                    stream.names = names
                    stream.wake.set()
        finally:
            stream.closed = True
            stream.wake.set()

    async def StreamSecrets(self, request_iterator, context):  # type: ignore[no-untyped-def]
        stream = _Stream()
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(request_iterator, stream))
        try:
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                if stream.closed:
                    return
                response = self._response(stream)
                if response is not None:
                    await context.write(response)
                    self.pushes += 1
        finally:
            self._streams.discard(stream)
            reader.cancel()

    def _available(self, names: frozenset[str]) -> dict[str, secret_pb2.Secret]:
        """The wanted secrets that can be served now."""
        svid = self._identity.current if self._identity is not None else None
        out = secrets_of(svid) if svid is not None else {}
        for name in names - out.keys():
            secret = self.files.get(name)
            if secret is not None:
                out[name] = secret
        return {n: out[n] for n in sorted(names) if n in out}

    def _response(self, stream: _Stream) -> discovery_pb2.DiscoveryResponse | None:
        names = frozenset(stream.names)
        wanted = self._available(names)
        if not wanted:
            return None  # nothing to say yet: an empty answer would be a NACK
        h = hashlib.sha256()
        for name, secret in wanted.items():
            h.update(name.encode() + b"\0" + secret.SerializeToString(deterministic=True))
        version = h.hexdigest()[:16]
        if version == stream.sent_version and names == stream.sent_names:
            return None
        unknown = names - wanted.keys()
        if unknown:
            log.warning("Envoy asked for secrets this agent cannot serve (yet)",
                        extra={"names": sorted(unknown)})
        resources = []
        for secret in wanted.values():
            packed = any_pb2.Any()
            packed.Pack(secret)
            resources.append(packed)
        stream.sent_version, stream.sent_names = version, names
        svid = self._identity.current if self._identity is not None else None
        log.info("pushing secrets", extra={"names": sorted(wanted),
                                           "serial": svid.serial if svid else None})
        return discovery_pb2.DiscoveryResponse(
            version_info=version, resources=resources, type_url=SECRET,
            nonce=uuid.uuid4().hex[:12])
