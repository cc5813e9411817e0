"""A fake Envoy ADS client, for tests and benchmarks (SotW or delta).

It behaves like a sidecar's xDS client, without the proxy: it subscribes to CDS and LDS
(wildcard), then to EDS for the EDS clusters it received, to SRDS (wildcard) when a
listener's HTTP connection manager has scoped routes, and to RDS for the route config
names of the HTTP connection managers and of the scopes it received. It ACKs every
response unless told to NACK a type. One instance is one task and one gRPC stream, so a
thousand of them run in one process; pass a shared ``channel`` to multiplex them over one
connection.

    async with FakeAdsClient("127.0.0.1:15010", "web.default", metadata) as c:
        await c.wait_for(snapshot)             # versions match this ProxySnapshot
        cluster = c.resources[CLUSTER]["web"]  # decoded protobuf messages
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from shoal.errors import Unavailable
from shoal.xds.cache.bounded import ByIdentity
from shoal.xds.server.server import ADS_SERVICE
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    SECRET,
    WILDCARD_TYPES,
    ProxySnapshot,
)

DECODERS: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SCOPED_ROUTE: scoped_route_pb2.ScopedRouteConfiguration,
    SECRET: secret_pb2.Secret,
}
_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

Condition = Callable[["FakeAdsClient"], bool] | ProxySnapshot | Mapping[str, str]


@dataclass(frozen=True)
class Received:
    """One response, in arrival order."""

    type_url: str
    version: str
    names: tuple[str, ...]  # resources in the response
    removed: tuple[str, ...]  # delta removals
    nacked: bool


# Decoded resources by (type, serialized bytes), shared by the clients of one process: a
# thousand fake sidecars sent the same bytes decode them once (what each is handed is
# exactly what its bytes decode to; the messages are read-only). Bounded: emptied at
# _DECODED_MAX entries.
_DECODED: dict[tuple[str, bytes], Message] = {}
_DECODED_MAX = 200_000
# (type, nonce, version) -> decoded resources, for clients with shared_responses
_RESPONSES: dict[tuple[str, str, str], dict[str, Message]] = {}
_RESPONSES_MAX = 4096


@dataclass(frozen=True)
class _Head:
    """The header fields of a serialized response, read without parsing the resources
    that follow them (shoal writes the header first: sotw.py, delta.py)."""

    type_url: str
    nonce: str
    version: str
    removed: tuple[str, ...]

    @property
    def version_info(self) -> str:
        return self.version

    @property
    def system_version_info(self) -> str:
        return self.version

    @property
    def removed_resources(self) -> tuple[str, ...]:
        return self.removed

    @staticmethod
    def parse(raw: bytes, delta: bool) -> _Head | None:
        """Fields 1 (version), 4 (type URL), 5 (nonce) and, delta, 6 (removed names) up
        to the first resource (field 2); None if the bytes are not laid out so."""
        fields: dict[int, str] = {}
        removed: list[str] = []
        pos = 0
        while pos < len(raw):
            key, pos = _varint(raw, pos)
            if key & 7 != 2:
                return None
            size, pos = _varint(raw, pos)
            if key >> 3 == 2:
                break
            value = raw[pos:pos + size].decode()
            pos += size
            if delta and key >> 3 == 6:
                removed.append(value)
            else:
                fields[key >> 3] = value
        if 4 not in fields or 5 not in fields:
            return None
        return _Head(fields[4], fields[5], fields.get(1, ""), tuple(removed))


def _serialize(msg: Message | bytes) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = raw[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def decode(cls: type[Message], type_url: str, value: bytes) -> Message:
    key = (type_url, value)
    msg = _DECODED.get(key)
    if msg is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        msg = _DECODED[key] = cls.FromString(value)
    return msg


def resource_name(msg: Message) -> str:
    if isinstance(msg, endpoint_pb2.ClusterLoadAssignment):
        return msg.cluster_name
    return str(getattr(msg, "name", ""))


def eds_names(clusters: Mapping[str, Message]) -> set[str]:
    out = set()
    for c in clusters.values():
        if isinstance(c, cluster_pb2.Cluster) and c.type == cluster_pb2.Cluster.EDS:
            out.add(c.eds_cluster_config.service_name or c.name)
    return out


def _hcms(listeners: Mapping[str, Message]) -> list[hcm_pb2.HttpConnectionManager]:
    out = []
    for lis in listeners.values():
        if not isinstance(lis, listener_pb2.Listener):
            continue
        chains = [*lis.filter_chains, lis.default_filter_chain]
        for f in (f for chain in chains for f in chain.filters):
            if f.typed_config.type_url == _HCM_URL:
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                out.append(hcm)
    return out


def rds_names(listeners: Mapping[str, Message], scopes: frozenset[str] = frozenset()
              ) -> set[str]:
    """Route configurations named by the listeners' HCMs, and ``scopes``: those the SRDS
    scopes name (:func:`scope_targets`)."""
    out = {h.rds.route_config_name for h in _hcms(listeners) if h.HasField("rds")}
    return (out | scopes) - {""}


def scope_targets(scopes: Mapping[str, Message]) -> frozenset[str]:
    """The route configuration names the scopes point to."""
    return frozenset(str(getattr(s, "route_configuration_name", "")) for s in scopes.values())


# What clients with shared_responses compute from one decoded response (the same mapping
# for every client sent it, never mutated, unlike a client's own store), by kind:
# the decoded mapping -> the result. Each kind holds at most 64 responses' results.
_PER_RESPONSE: dict[str, ByIdentity[frozenset[str]]] = {}


def _once_per_response(kind: str, decoded: Mapping[str, Message],
                       compute: Callable[[Mapping[str, Message]], frozenset[str]]
                       ) -> frozenset[str]:
    memo = _PER_RESPONSE.get(kind)
    if memo is None:
        memo = _PER_RESPONSE[kind] = ByIdentity(max_entries=64)
    got = memo.get((decoded,))
    if got is None:
        got = memo.put((decoded,), compute(decoded))
    return got


def _shared_scope_targets(decoded: Mapping[str, Message]) -> frozenset[str]:
    return _once_per_response("scope targets", decoded, scope_targets)


def _shared_eds_names(decoded: Mapping[str, Message]) -> frozenset[str]:
    return _once_per_response("eds names", decoded, lambda d: frozenset(eds_names(d)))


# A request, serialized, by what it says: clients with shared_responses that make the same
# move send the same bytes. Delta: (type, nonce, names subscribed, names unsubscribed);
# SotW: (type, version, nonce, names subscribed).
_REQUESTS: dict[tuple[str, str, frozenset[str], frozenset[str]] | tuple[str, str, str,
                frozenset[str]], bytes] = {}
_REQUESTS_MAX = 256
# SotW subscriptions of clients with shared_responses: equal sets are one object (a
# request's key is found by identity, not by comparing thousands of names)
_SUBSCRIPTIONS: dict[frozenset[str], frozenset[str]] = {}


def _serialized(key: tuple[str, str, Any, frozenset[str]], build: Callable[[], Message]
                ) -> bytes:
    raw = _REQUESTS.get(key)
    if raw is None:
        if len(_REQUESTS) >= _REQUESTS_MAX:
            _REQUESTS.clear()
        raw = _REQUESTS[key] = build().SerializeToString()
    return raw


def uses_srds(listeners: Mapping[str, Message]) -> bool:
    return any(h.HasField("scoped_routes") for h in _hcms(listeners))


class FakeAdsClient:
    def __init__(
        self,
        target: str,
        node_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        delta: bool = False,
        channel: grpc.aio.Channel | None = None,
        shared_responses: bool = False,
    ) -> None:
        """``shared_responses`` (benchmarks): trust that a response's nonce names its
        content, as shoal's does (packing.content_nonce), and decode each distinct
        response once per process for all clients sent it."""
        self.shared_responses = shared_responses
        self.target = target
        self.node = base_pb2.Node(id=node_id, cluster="shoal")
        if metadata is not None:
            self.node.metadata.CopyFrom(json_format.ParseDict(dict(metadata), struct_pb2.Struct()))
        self.delta = delta
        self.resources: dict[str, dict[str, Message]] = {t: {} for t in DECODERS}
        self.versions: dict[str, str] = {}  # type -> last accepted version
        self.received: list[Received] = []
        self.subscribed: dict[str, set[str]] = {}  # non-wildcard type -> names
        self._subscription: dict[str, frozenset[str]] = {}  # the same, shared (SotW, bench)
        self.error: grpc.aio.AioRpcError | None = None
        self._nacks: dict[str, str] = {}
        self._nonces: dict[str, str] = {}
        self._own_channel = channel is None
        self._channel = channel
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._first = True
        self._wildcards = [CLUSTER, LISTENER]  # types subscribed without names
        self._scope_targets: frozenset[str] = frozenset()  # route configurations scopes name

    # -- control ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        if self.shared_responses:  # responses read as bytes: see _response
            method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
            self._call = self._channel.stream_stream(
                f"/{ADS_SERVICE}/{method}",
                request_serializer=_serialize)()
        else:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
            if self.delta:
                self._call = stub.DeltaAggregatedResources()
            else:
                self._call = stub.StreamAggregatedResources()
        for type_url in (CLUSTER, LISTENER):
            await self._request(type_url)
        self._task = asyncio.create_task(self._run(), name=f"fake-ads {self.node.id}")

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_channel and self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> FakeAdsClient:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def nack(self, type_url: str, message: str = "rejected by FakeAdsClient") -> None:
        """NACK every further response of ``type_url`` with ``message``."""
        self._nacks[type_url] = message

    def accept(self, type_url: str) -> None:
        self._nacks.pop(type_url, None)

    @property
    def closed(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def code(self) -> grpc.StatusCode | None:
        return self.error.code() if self.error is not None else None

    # -- waiting ---------------------------------------------------------------------------
    def synced_with(self, snapshot: ProxySnapshot) -> bool:
        """Every type this client subscribed to is at the snapshot's version."""
        types = [*self._wildcards, *self.subscribed]
        return all(self.versions.get(t) == snapshot.get(t).version for t in types)

    async def wait_for(self, cond: Condition, timeout: float = 10.0) -> None:
        """Wait until ``cond`` holds: a predicate, a snapshot, or {type_url: version}."""
        check = self._condition(cond)
        async with asyncio.timeout(timeout):
            while not check(self):
                if self.closed:
                    raise Unavailable(f"{self.node.id}: ADS stream ended: {self.error}")
                await self._changed.wait()

    async def wait_closed(self, timeout: float = 10.0) -> grpc.StatusCode | None:
        assert self._task is not None
        async with asyncio.timeout(timeout):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        return self.code

    @staticmethod
    def _condition(cond: Condition) -> Callable[[FakeAdsClient], bool]:
        if isinstance(cond, ProxySnapshot):
            return lambda c: c.synced_with(cond)
        if isinstance(cond, Mapping):
            want = dict(cond)
            return lambda c: all(c.versions.get(t) == v for t, v in want.items())
        return cond

    # -- the stream --------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    return
                await self._on_response(self._response(response))
                self._pulse()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e
        except asyncio.InvalidStateError:
            return  # closed by us while answering
        finally:
            self._pulse()

    def _response(self, raw: Any) -> Any:
        """With shared responses the stream yields bytes: a response already decoded in
        this process (its header's type, nonce and version say which, as shoal's nonces
        name content) is not parsed again, only its header; else parsed whole."""
        if not isinstance(raw, bytes):
            return raw
        head = _Head.parse(raw, self.delta)
        if (head is not None and head.type_url not in self._nacks
                and (head.type_url, head.nonce, head.version) in _RESPONSES):
            return head
        cls = discovery_pb2.DeltaDiscoveryResponse if self.delta else \
            discovery_pb2.DiscoveryResponse
        return cls.FromString(raw)

    def _pulse(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _on_response(self, r: Any) -> None:
        t = r.type_url
        self._nonces[t] = r.nonce
        version = r.system_version_info if self.delta else r.version_info
        removed = tuple(r.removed_resources) if self.delta else ()
        if t in self._nacks:
            names = tuple(x.name for x in r.resources) if self.delta else ()
            self.received.append(Received(t, version, names, removed, nacked=True))
            await self._request(t, nonce=r.nonce, error=self._nacks[t])
            return
        decoded = self._apply(r)
        # (with shared responses the decoded names are the resources' names, once)
        names = (tuple(decoded) if not self.delta or self.shared_responses
                 else tuple(x.name for x in r.resources))
        self.versions[t] = version
        self.received.append(Received(t, version, names, removed, nacked=False))
        # Like Envoy: subscriptions that follow from new clusters/listeners go out before
        # the ACK of the response that caused them.
        if t == CLUSTER:
            clusters = self.resources[CLUSTER]
            # (shared responses: a client holding exactly one response's clusters, as
            # after its first, reads their EDS names computed once for every client)
            await self._follow(ENDPOINT, set(
                _shared_eds_names(decoded) if self.shared_responses
                and len(decoded) == len(clusters) else eds_names(clusters)))
        elif t in (LISTENER, SCOPED_ROUTE):
            if (t == LISTENER and SCOPED_ROUTE not in self._wildcards
                    and uses_srds(self.resources[LISTENER])):
                self._wildcards.append(SCOPED_ROUTE)  # like Envoy: SRDS without names
                await self._request(SCOPED_ROUTE)
            if t == SCOPED_ROUTE:
                self._scope_targets = self._targets(decoded, removed)
            await self._follow(ROUTE, rds_names(self.resources[LISTENER], self._scope_targets))
        await self._request(t, nonce=r.nonce)

    def _targets(self, decoded: Mapping[str, Message], removed: tuple[str, ...]
                 ) -> frozenset[str]:
        """The route configurations the held scopes name. SotW: a whole set, what was
        decoded is what is held. Delta: the held scopes are the whole store; with shared
        responses (benchmarks) the new scopes' targets are added to the earlier ones
        (computed once per response; a target a re-pointed scope no longer names stays
        subscribed, harmless there) unless a scope was removed."""
        if not self.shared_responses:
            return scope_targets(self.resources[SCOPED_ROUTE])
        if not self.delta:
            return _shared_scope_targets(decoded)
        if removed:
            return scope_targets(self.resources[SCOPED_ROUTE])
        return self._scope_targets | _shared_scope_targets(decoded)

    def _apply(self, r: Any) -> dict[str, Message]:
        t = r.type_url
        store = self.resources.setdefault(t, {})
        if self.shared_responses:
            key = (t, r.nonce, r.system_version_info if self.delta else r.version_info)
            decoded = _RESPONSES.get(key)
            if decoded is None:
                if len(_RESPONSES) >= _RESPONSES_MAX:
                    _RESPONSES.clear()
                decoded = _RESPONSES[key] = self._decode(r)
        else:
            decoded = self._decode(r)
        if self.delta:
            store.update(decoded)
            for name in r.removed_resources:
                store.pop(name, None)
        elif t in WILDCARD_TYPES:  # SotW LDS/CDS: the whole set
            store.clear()
            store.update(decoded)
        else:  # SotW EDS/RDS: what changed; the rest is kept (like Envoy)
            store.update(decoded)
        return decoded

    def _decode(self, r: Any) -> dict[str, Message]:
        t = r.type_url
        cls = DECODERS.get(t)
        decoded: dict[str, Message] = {}
        anys = [x.resource for x in r.resources] if self.delta else list(r.resources)
        for a in anys:
            msg = decode(cls, t, a.value) if cls else a
            name = resource_name(msg) if cls else ""
            decoded[name] = msg
        return decoded

    async def _follow(self, type_url: str, names: set[str]) -> None:
        old = self.subscribed.get(type_url)
        if old == names or (old is None and not names):
            return
        self.subscribed[type_url] = set(names)
        if self.shared_responses and not self.delta:
            key = frozenset(names)
            if len(_SUBSCRIPTIONS) >= _REQUESTS_MAX:
                _SUBSCRIPTIONS.clear()
            self._subscription[type_url] = _SUBSCRIPTIONS.setdefault(key, key)
        store = self.resources.setdefault(type_url, {})
        for gone in (old or set()) - names:
            store.pop(gone, None)
        if self.delta:
            await self._request(
                type_url, subscribe=names - (old or set()), unsubscribe=(old or set()) - names
            )
        else:
            await self._request(type_url, nonce=self._nonces.get(type_url, ""))

    async def _request(
        self,
        type_url: str,
        *,
        nonce: str = "",
        error: str | None = None,
        subscribe: set[str] | None = None,
        unsubscribe: set[str] | None = None,
    ) -> None:
        node = self.node if self._first else None
        self._first = False
        status = status_pb2.Status(code=3, message=error) if error is not None else None
        req: Message | bytes
        if self.shared_responses and node is None and status is None and self.delta:
            sub, unsub = frozenset(subscribe or ()), frozenset(unsubscribe or ())
            req = _serialized((type_url, nonce, sub, unsub), lambda: (
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url, response_nonce=nonce,
                    resource_names_subscribe=sorted(sub),
                    resource_names_unsubscribe=sorted(unsub))))
        elif self.shared_responses and node is None and status is None:
            version = self.versions.get(type_url, "")
            names = self._subscription.get(type_url, frozenset())
            req = _serialized((type_url, version, nonce, names), lambda: (
                discovery_pb2.DiscoveryRequest(
                    type_url=type_url, version_info=version, response_nonce=nonce,
                    resource_names=sorted(names))))
        elif self.delta:
            req = discovery_pb2.DeltaDiscoveryRequest(
                node=node,
                type_url=type_url,
                response_nonce=nonce,
                error_detail=status,
                resource_names_subscribe=sorted(subscribe or ()),
                resource_names_unsubscribe=sorted(unsubscribe or ()),
            )
        else:
            req = discovery_pb2.DiscoveryRequest(
                node=node,
                type_url=type_url,
                version_info=self.versions.get(type_url, ""),
                response_nonce=nonce,
                error_detail=status,
                resource_names=sorted(self.subscribed.get(type_url, ())),
            )
        await self._call.write(req)
