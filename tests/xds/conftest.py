"""Fixtures for the xDS transport tests: a real gRPC server on a free port, snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from shoal.testing import FakeAdsClient
from shoal.xds.cache import SnapshotCache
from shoal.xds.node import node_metadata
from shoal.xds.server import StatusTracker, XdsServer
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Proxy,
    ProxyMetadata,
    ProxySnapshot,
    Resources,
)

NODE = "web.default"
META = node_metadata(ProxyMetadata(workload="web", outbound_port=15001), "default")


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def sock(port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    )


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
    )


def cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    lb = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=sock(port))
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb])],
    )


def listener(
    name: str, port: int, route_name: str, stat_prefix: str = "ingress"
) -> listener_pb2.Listener:
    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_name),
        http_filters=[router],
    )
    typed = any_pb2.Any()
    typed.Pack(hcm)
    f = listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=typed
    )
    return listener_pb2.Listener(
        name=name,
        address=sock(port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[f])],
    )


def route_config(name: str, routes: Mapping[str, str]) -> route_pb2.RouteConfiguration:
    """``routes``: path prefix -> cluster."""
    rs = [
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=prefix),
            route=route_components_pb2.RouteAction(cluster=cluster),
        )
        for prefix, cluster in sorted(routes.items(), key=lambda kv: -len(kv[0]))
    ]
    vh = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=rs)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])


def snapshot(
    backends: Mapping[str, int],
    routes: Mapping[str, str],
    listen_port: int = 15001,
    stat_prefix: str = "ingress",
) -> ProxySnapshot:
    """One EDS cluster per backend (name -> port), one listener, one route config."""
    return ProxySnapshot(
        resources={
            CLUSTER: Resources.of({n: eds_cluster(n) for n in backends}),
            ENDPOINT: Resources.of({n: cla(n, p) for n, p in backends.items()}),
            LISTENER: Resources.of({"http": listener("http", listen_port, "local", stat_prefix)}),
            ROUTE: Resources.of({"local": route_config("local", routes)}),
        }
    )


@dataclass
class RecordingHooks:
    """Records connect/disconnect; optionally puts ``initial`` in the cache on connect."""

    cache: SnapshotCache
    initial: ProxySnapshot | None = None
    connected: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)

    async def proxy_connected(self, proxy: Proxy) -> None:
        self.connected.append(proxy.node_id)
        if self.initial is not None and self.cache.get(proxy.node_id) is None:
            self.cache.set(proxy.node_id, self.initial)

    async def proxy_disconnected(self, node_id: str) -> None:
        self.disconnected.append(node_id)


@dataclass
class Harness:
    cache: SnapshotCache
    hooks: RecordingHooks
    xds: XdsServer
    address: str

    def client(self, node_id: str = NODE, *, delta: bool = False,
               shared_responses: bool = False) -> FakeAdsClient:
        return FakeAdsClient(self.address, node_id, META, delta=delta,
                             shared_responses=shared_responses)


async def start_harness(**server_kwargs: float) -> tuple[Harness, grpc.aio.Server]:
    cache = SnapshotCache()
    hooks = RecordingHooks(cache)
    xds = XdsServer(cache, hooks, StatusTracker(), **server_kwargs)  # type: ignore[arg-type]
    server = grpc.aio.server()
    xds.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Harness(cache, hooks, xds, f"127.0.0.1:{port}"), server


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h, server = await start_harness()
    yield h
    await server.stop(grace=None)


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` until it holds (for server-side state the client cannot see)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


class Builders:
    """Snapshot builders for tests (tests/xds has no __init__.py: a package named ``xds``
    would shadow xds-protos' top-level ``xds`` package, so tests take these via a fixture).
    """

    node = NODE
    meta = META
    snapshot = staticmethod(snapshot)
    listener = staticmethod(listener)
    route_config = staticmethod(route_config)
    eds_cluster = staticmethod(eds_cluster)
    cla = staticmethod(cla)
    eventually = staticmethod(eventually)


@pytest.fixture
def build() -> type[Builders]:
    return Builders


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Start harnesses with custom XdsServer options; all are stopped at teardown."""
    servers: list[grpc.aio.Server] = []

    async def make(**kwargs: float) -> Harness:
        h, server = await start_harness(**kwargs)
        servers.append(server)
        return h

    yield make
    for server in servers:
        await server.stop(grace=None)
