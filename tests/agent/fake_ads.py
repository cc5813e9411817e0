"""A minimal ADS server (SotW and delta) that sends Envoy empty LDS/CDS so it goes LIVE.

It records the node of every stream, so tests can check what the agent told xDS."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.streams = 0
        self._nonce = itertools.count(1)
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self.server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    def _record(self, node: Any) -> None:
        if node.id:
            self.nodes.append(json_format.MessageToDict(node, preserving_proto_field_name=True))

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        self.streams += 1
        async for req in request_iterator:
            self._record(req.node)
            if req.response_nonce:  # an ACK/NACK of what we sent: nothing more to say
                continue
            yield discovery_pb2.DiscoveryResponse(
                type_url=req.type_url, version_info="1", nonce=str(next(self._nonce))
            )

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        self.streams += 1
        async for req in request_iterator:
            self._record(req.node)
            if req.response_nonce:
                continue
            yield discovery_pb2.DeltaDiscoveryResponse(
                type_url=req.type_url, system_version_info="1", nonce=str(next(self._nonce))
            )
