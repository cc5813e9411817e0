"""A test client of the agent's SDS server: one StreamSecrets call over its unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from shoal.xds.types import SECRET


class SdsStream:
    def __init__(self, call: grpc.aio.StreamStreamCall,
                 requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None]):
        self.call = call
        self._requests = requests

    async def request(self, names: Sequence[str],
                      ack: discovery_pb2.DiscoveryResponse | None = None) -> None:
        """Subscribe to ``names``; with ``ack``, this request ACKs that response."""
        req = discovery_pb2.DiscoveryRequest(type_url=SECRET, resource_names=list(names))
        if ack is not None:
            req.response_nonce, req.version_info = ack.nonce, ack.version_info
        await self._requests.put(req)

    def read(self) -> asyncio.Future[discovery_pb2.DiscoveryResponse]:
        return asyncio.ensure_future(self.call.read())


def secrets_of(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        out[secret.name] = secret
    return out


@contextlib.asynccontextmanager
async def sds_stream(socket: Path) -> AsyncIterator[SdsStream]:
    requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

    async def gen():  # type: ignore[no-untyped-def]
        while (r := await requests.get()) is not None:
            yield r

    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets(gen())
        try:
            yield SdsStream(call, requests)
        finally:
            await requests.put(None)
            call.cancel()
