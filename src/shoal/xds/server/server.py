"""The ADS gRPC edge: stream lifecycle, node identity (checked against the peer's
certificate, :mod:`shoal.xds.server.peer`), hooks, errors -> gRPC status."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message

from shoal.errors import (
    NotFound,
    PermissionDenied,
    ShoalError,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from shoal.xds.cache import SnapshotCache
from shoal.xds.node import parse_node
from shoal.xds.server.budget import WriteBudget
from shoal.xds.server.delta import DeltaStream
from shoal.xds.server.hooks import ConnectionHooks
from shoal.xds.server.peer import Claim, NodeClaims, NodeGuard, peer_of
from shoal.xds.server.requests import RequestCache
from shoal.xds.server.sotw import SotwStream
from shoal.xds.server.status import ProxyStatus, StatusTracker
from shoal.xds.server.stream import SlowClient, StreamContext, StreamCore
from shoal.xds.server.watchdog import Watchdog

log = logging.getLogger(__name__)


class _StreamEnded(Exception):
    """The client closed its side of the stream."""


def grpc_code(err: ShoalError) -> grpc.StatusCode:
    if isinstance(err, ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(err, SlowClient):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(err, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(err, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.INTERNAL


class XdsServer:
    """Aggregated discovery service (SotW and delta) serving snapshots from a cache.

    ``max_queue`` bounds the responses waiting to be written per stream; ``send_timeout``
    is how long one write may wait for a client that does not read; ``ack_timeout`` how
    long a response may stay unanswered. Each limit cuts the stream with
    RESOURCE_EXHAUSTED (see :mod:`shoal.xds.server.stream`). ``budget`` bounds the bytes
    of responses being written at once across all streams (:mod:`.budget`: the connect
    storm's memory), 128 MiB unless given.

    Before a stream is served, its node is checked against the peer (``guard``, given per
    port in :meth:`add_to`) and must not belong to another identity's live streams
    (:class:`NodeClaims`): refused with PERMISSION_DENIED before any hook runs or any
    status is recorded.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        hooks: ConnectionHooks,
        status: StatusTracker | None = None,
        *,
        max_queue: int = 16,
        send_timeout: float = 30.0,
        ack_timeout: float = 60.0,
        budget: WriteBudget | None = None,
    ) -> None:
        self.cache = cache
        self.hooks = hooks
        self.tracker = status if status is not None else StatusTracker()
        self.max_queue = max_queue
        self.send_timeout = send_timeout
        self.ack_timeout = ack_timeout
        self.budget = budget if budget is not None else WriteBudget()
        self._ids = itertools.count(1)
        self._streams: Counter[str] = Counter()  # live streams per node id
        self.claims = NodeClaims()
        self.watchdog = Watchdog(min(send_timeout, ack_timeout) / 4)
        # equal large requests parsed once (the same subscription from every proxy)
        self.sotw_requests = RequestCache(discovery_pb2.DiscoveryRequest)
        self.delta_requests = RequestCache(discovery_pb2.DeltaDiscoveryRequest)

    def add_to(self, server: grpc.aio.Server, guard: NodeGuard | None = None) -> None:
        """Serve ADS on ``server``; ``guard`` decides which peer may be which node (default:
        any node, unless another identity holds it)."""
        servicer = _Servicer(self, guard or NodeGuard())
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                servicer.StreamAggregatedResources,
                request_deserializer=self.sotw_requests.parse,
                response_serializer=_wire),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                servicer.DeltaAggregatedResources,
                request_deserializer=self.delta_requests.parse,
                response_serializer=_wire),
        }),))

    def status(self) -> list[ProxyStatus]:
        return self.tracker.all()

    def connected(self) -> dict[str, int]:
        """Node id -> number of live streams."""
        return dict(self._streams)

    async def serve(
        self, flavour: type[StreamCore], requests: AsyncIterator[Any], context: Any,
        guard: NodeGuard | None = None,
    ) -> None:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        try:
            proxy = parse_node(first.node)
        except ValidationError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return
        node_id = proxy.node_id
        stream_id = next(self._ids)
        try:
            peer = peer_of(context)
            owner = (guard or NodeGuard()).check_node(peer, proxy)
            claim = self.claims.claim(node_id, stream_id, peer, owner)
        except (Unauthenticated, PermissionDenied) as e:
            log.warning("xds stream refused", extra={"node": node_id, "reason": str(e)})
            await context.abort(grpc_code(e), str(e))
            return
        self._streams[node_id] += 1
        self.tracker.connected(node_id, stream_id, flavour.flavour)
        log.info("xds stream opened", extra={"node": node_id, "stream": stream_id})
        failure: ShoalError | None = None
        try:
            await self.hooks.proxy_connected(proxy)
            ctx = StreamContext(
                node_id,
                stream_id,
                self.cache,
                self.tracker,
                self.max_queue,
                self.send_timeout,
                self.ack_timeout,
                self.budget,
            )
            core = flavour(ctx)
            core.on_request(first)
            cut: list[SlowClient] = []

            def overdue(reason: SlowClient) -> None:
                cut.append(reason)
                claim.revoked.set()  # (the one event that ends the stream: _ended)

            self.watchdog.watch(stream_id, core, overdue)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(core, requests))
                tg.create_task(self._watch(core))
                tg.create_task(core.write_loop(context.write))
                tg.create_task(self._ended(claim, cut))
        except* _StreamEnded:
            pass
        except* ShoalError as group:
            failure = group.exceptions[0]  # type: ignore[assignment]
        finally:
            self.watchdog.forget(stream_id)
            await asyncio.shield(self._closed(node_id, stream_id))
        if failure is not None:
            log.warning("xds stream cut", extra={"node": node_id, "reason": str(failure)})
            await context.abort(grpc_code(failure), str(failure))

    async def _read(self, core: StreamCore, requests: AsyncIterator[Any]) -> None:
        async for req in requests:
            core.on_request(req)
        raise _StreamEnded

    async def _ended(self, claim: Claim, cut: list[SlowClient]) -> None:
        """End the stream when its node is claimed by another identity (PERMISSION_DENIED)
        or the watchdog finds its client too slow (RESOURCE_EXHAUSTED): one task and one
        event per stream for both."""
        await claim.revoked.wait()
        if cut:
            raise cut[0]
        raise PermissionDenied(claim.reason)

    async def _watch(self, core: StreamCore) -> None:
        async for snapshot in self.cache.watch(core.ctx.node_id):
            if snapshot is not None:  # removed: keep serving what the client has
                core.set_target(snapshot)

    async def _closed(self, node_id: str, stream_id: int) -> None:
        self.claims.release(node_id, stream_id)
        self.tracker.disconnected(node_id, stream_id)
        self._streams[node_id] -= 1
        if self._streams[node_id] <= 0:
            del self._streams[node_id]
            await self.hooks.proxy_disconnected(node_id)
        log.info("xds stream closed", extra={"node": node_id, "stream": stream_id})


ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def _wire(response: Message | bytes) -> bytes:
    """Responses go out as built: SotW streams hand over bytes already serialized
    (sotw.py), delta streams messages."""
    return response if isinstance(response, bytes) else response.SerializeToString()


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: XdsServer, guard: NodeGuard) -> None:
        self._server = server
        self._guard = guard

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> None:
        await self._server.serve(SotwStream, request_iterator, context, self._guard)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> None:
        await self._server.serve(DeltaStream, request_iterator, context, self._guard)
