"""A tiny SDS server for tests: serves fixed secrets per Envoy node over gRPC.

    server = SdsServer({"client.default": client_secrets, "web-1.default": web_secrets})
    port = await server.start()          # 127.0.0.1:port, point the `sds-grpc` cluster here
    ...
    await server.stop()

Or, from synchronous tests, ``with running_sds_server(secrets) as port: ...`` runs it in a
background thread. ``workload_secrets`` builds the two secrets a shoal sidecar uses
("default": certificate chain + key, "ROOTCA": trust bundle) from PEM bytes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from shoal.xds.types import SECRET, SECRET_ROOT_CA, SECRET_WORKLOAD_CERT

Secrets = Mapping[str, secret_pb2.Secret]


def workload_secrets(cert_chain_pem: bytes, key_pem: bytes, roots_pem: bytes
                     ) -> dict[str, secret_pb2.Secret]:
    return {
        SECRET_WORKLOAD_CERT: secret_pb2.Secret(
            name=SECRET_WORKLOAD_CERT,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cert_chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=key_pem),
            ),
        ),
        SECRET_ROOT_CA: secret_pb2.Secret(
            name=SECRET_ROOT_CA,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=roots_pem)
            ),
        ),
    }


class _Servicer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, secrets: Mapping[str, Secrets]):
        self._secrets = secrets

    def _response(self, req: discovery_pb2.DiscoveryRequest, nonce: int
                  ) -> discovery_pb2.DiscoveryResponse:
        mine = self._secrets.get(req.node.id, {})
        resp = discovery_pb2.DiscoveryResponse(version_info="1", type_url=SECRET,
                                               nonce=str(nonce))
        for name in req.resource_names or sorted(mine):
            if name in mine:
                packed = any_pb2.Any()
                packed.Pack(mine[name])
                resp.resources.append(packed)
        return resp

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        sent: tuple[str, ...] | None = None
        node = discovery_pb2.DiscoveryRequest().node
        nonce = 0
        async for req in request_iterator:
            if req.HasField("node"):
                node = req.node
            req.node.CopyFrom(node)  # only the first request of a stream carries the node
            names = tuple(sorted(req.resource_names))
            if names == sent:
                continue  # an ACK (or NACK) of what we sent: nothing new to say
            sent = names
            nonce += 1
            yield self._response(req, nonce)

    async def FetchSecrets(
        self, request: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.DiscoveryResponse:
        return self._response(request, 1)


class SdsServer:
    """Serves ``secrets[node id][secret name]`` on 127.0.0.1 (a free port by default)."""

    def __init__(self, secrets: Mapping[str, Secrets]):
        self._server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(_Servicer(secrets),
                                                                  self._server)

    async def start(self, port: int = 0) -> int:
        bound = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        return bound

    async def stop(self) -> None:
        await self._server.stop(grace=None)


@contextmanager
def running_sds_server(secrets: Mapping[str, Secrets]) -> Iterator[int]:
    """Run an :class:`SdsServer` on its own event loop thread; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def _start() -> tuple[SdsServer, int]:
        server = SdsServer(secrets)
        return server, await server.start()

    server, port = asyncio.run_coroutine_threadsafe(_start(), loop).result(timeout=10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
