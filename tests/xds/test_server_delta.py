"""Delta ADS against the fake client and raw gRPC streams."""

from __future__ import annotations

from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3.scoped_route_pb2 import ScopedRouteConfiguration
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2

from shoal.xds.cache import pack
from shoal.xds.generate.protocol import http_connection_manager
from shoal.xds.server import Sync
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SCOPED_ROUTE,
    ProxySnapshot,
    Resources,
)

Harness = Any  # tests/xds/conftest.py:Harness


async def test_initial_push(harness: Harness, build: Any) -> None:
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a", "/b": "b"})
    harness.hooks.initial = snap
    async with harness.client(delta=True) as c:
        await c.wait_for(snap)
        assert set(c.resources[CLUSTER]) == {"a", "b"}
        assert set(c.resources[ENDPOINT]) == {"a", "b"}
        assert set(c.resources[LISTENER]) == {"http"}
        assert set(c.resources[ROUTE]) == {"local"}
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.SYNCED)
        assert harness.xds.status()[0].flavour == "delta"


async def test_update_sends_only_changes_in_order(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"}, listen_port=15001)
    harness.hooks.initial = snap1
    async with harness.client(delta=True) as c:
        await c.wait_for(snap1)
        n = len(c.received)
        snap2 = build.snapshot({"a": 8001, "b": 8002, "c": 8003}, {"/": "c"}, listen_port=15002)
        harness.cache.set(build.node, snap2)
        await c.wait_for(snap2)
        got = c.received[n:]
        order = [r.type_url for r in got]
        assert list(dict.fromkeys(order)) == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
        assert order == sorted(order, key=PUSH_ORDER.index)
        assert got[0].names == ("c",)  # only the new cluster
        assert set(c.resources[ENDPOINT]) == {"a", "b", "c"}


async def test_cluster_removal_is_make_before_break(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001, "b": 8002}, {"/": "a", "/b": "b"})
    harness.hooks.initial = snap1
    async with harness.client(delta=True) as c:
        await c.wait_for(snap1)
        n = len(c.received)
        snap2 = build.snapshot({"a": 8001}, {"/": "a"})
        harness.cache.set(build.node, snap2)
        await c.wait_for(lambda c: "b" not in c.resources[CLUSTER])
        await c.wait_for(snap2)
        log = c.received[n:]
        removal = next(i for i, r in enumerate(log) if r.type_url == CLUSTER and r.removed)
        assert log[removal].removed == ("b",)
        rds = next(i for i, r in enumerate(log) if r.type_url == ROUTE)
        assert rds < removal
        assert set(c.resources[CLUSTER]) == {"a"}


async def test_nack_is_recorded_and_not_looped(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    harness.hooks.initial = snap1
    async with harness.client(delta=True) as c:
        await c.wait_for(snap1)
        c.nack(ROUTE, "unknown cluster 'zzz'")
        snap2 = build.snapshot({"a": 8001}, {"/": "zzz"})
        harness.cache.set(build.node, snap2)
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.NACKED)
        nack = harness.xds.status()[0].types[ROUTE].nack
        assert nack is not None and nack.message == "unknown cluster 'zzz'"
        snap3 = build.snapshot({"a": 8001, "b": 8002}, {"/": "zzz"})
        harness.cache.set(build.node, snap3)
        await c.wait_for({CLUSTER: snap3.get(CLUSTER).version})
        await build.eventually(
            lambda: (
                harness.xds.status()[0].types[CLUSTER].acked_version == snap3.get(CLUSTER).version
            )
        )
        assert [r.nacked for r in c.received if r.type_url == ROUTE] == [False, True]
        assert harness.xds.status()[0].sync == Sync.NACKED


async def test_reconnect_with_initial_versions_sends_only_differences(
    harness: Harness, build: Any
) -> None:
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
    harness.cache.set(build.node, snap)
    node = base_pb2.Node(id=build.node)
    node.metadata.CopyFrom(json_format.ParseDict(build.meta, struct_pb2.Struct()))
    clusters = snap.get(CLUSTER).items
    async with grpc.aio.insecure_channel(harness.address) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).DeltaAggregatedResources()
        req = discovery_pb2.DeltaDiscoveryRequest(
            node=node,
            type_url=CLUSTER,
            initial_resource_versions={"a": pack(clusters["a"]).version, "gone": "x"},
        )
        await call.write(req)
        r = await call.read()
        assert [x.name for x in r.resources] == ["b"]
        assert list(r.removed_resources) == ["gone"]
        assert r.resources[0].version == pack(clusters["b"]).version
        call.cancel()


async def test_reconnect_of_same_node_keeps_newest_stream(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    harness.hooks.initial = snap1
    old = harness.client(delta=True)
    await old.start()
    await old.wait_for(snap1)
    async with harness.client(delta=True) as new:
        await new.wait_for(snap1)
        await old.close()
        await build.eventually(lambda: harness.xds.connected() == {build.node: 1})
        assert harness.hooks.disconnected == []
        snap2 = build.snapshot({"a": 8001}, {"/": "b"})
        harness.cache.set(build.node, snap2)
        await new.wait_for(snap2)
    await build.eventually(lambda: harness.hooks.disconnected == [build.node])


def scoped_snapshot(build: Any, hosts: dict[str, str]) -> Any:
    """One backend, a listener with scoped routes, a scope per host -> route config."""
    hcm = http_connection_manager("http", scoped_by_host="outbound_http")
    lis = listener_pb2.Listener(name="http", address=build.snapshot({}, {}).get(
        LISTENER).items["http"].address,
        filter_chains=[listener_components_pb2.FilterChain(filters=[hcm])])
    scopes = {h: ScopedRouteConfiguration(
        name=h, route_configuration_name=rc,
        key=ScopedRouteConfiguration.Key(
            fragments=[ScopedRouteConfiguration.Key.Fragment(string_key=h)]))
        for h, rc in hosts.items()}
    routes = {rc: build.route_config(rc, {"/": "a"}) for rc in hosts.values()}
    base = build.snapshot({"a": 8001}, {"/": "a"})
    return ProxySnapshot(resources={
        CLUSTER: base.get(CLUSTER), ENDPOINT: base.get(ENDPOINT),
        LISTENER: Resources.of({"http": lis}), SCOPED_ROUTE: Resources.of(scopes),
        ROUTE: Resources.of(routes)})


async def test_scopes_added_later_keep_the_earlier_route_subscriptions(
        harness: Harness, build: Any) -> None:
    """A delta SRDS update carries only the new scope: the client (like Envoy) keeps the
    route configurations of the scopes it already had and subscribes to the new one."""
    snap1 = scoped_snapshot(build, {"one:80": "rc-one"})
    harness.hooks.initial = snap1
    for delta in (True, False):
        async with harness.client(f"n{delta}.default", delta=delta) as c:
            await c.wait_for(snap1)
            assert set(c.resources[ROUTE]) == {"rc-one"}
            snap2 = scoped_snapshot(build, {"one:80": "rc-one", "two:80": "rc-two"})
            harness.cache.set(f"n{delta}.default", snap2)
            await c.wait_for(snap2)
            assert set(c.resources[ROUTE]) == {"rc-one", "rc-two"}
            assert c.subscribed[ROUTE] == {"rc-one", "rc-two"}


async def test_proxies_making_the_same_move_share_one_response(
        harness: Harness, build: Any) -> None:
    """What a delta client holds is known by reference to the snapshot it was sent, so
    two proxies moving between the same snapshots get one diff and one response (built
    once, packing.ResponseCache); the response carries only what changed."""
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
    harness.hooks.initial = snap
    async with harness.client("one.default", delta=True) as one, \
            harness.client("two.default", delta=True) as two:
        await one.wait_for(snap)
        await two.wait_for(snap)
        bodies = harness.cache.responses
        assert len(bodies) == 4  # CDS, EDS, LDS, RDS: one each, not one per proxy
        changed = build.snapshot({"a": 8001, "b": 8002}, {"/": "b"})
        seen = {c: len(c.received) for c in (one, two)}
        for c in (one, two):
            harness.cache.set(c.node.id, changed)
            await c.wait_for(changed)
        assert len(bodies) == 5  # the new route configuration, once
        for c, n in seen.items():
            assert [(r.type_url, r.names, r.removed) for r in c.received[n:]] == [
                (ROUTE, ("local",), ())]
            assert c.resources[ROUTE]["local"] == changed.get(ROUTE).items["local"]
        # a cluster gone: removed by name, once for both
        fewer = build.snapshot({"a": 8001}, {"/": "a"})
        for c in (one, two):
            harness.cache.set(c.node.id, fewer)
            await c.wait_for(fewer)
            assert set(c.resources[CLUSTER]) == {"a"} and set(c.resources[ENDPOINT]) == {"a"}


async def test_the_first_request_of_a_type_is_answered_even_with_nothing_to_send(
        harness: Harness, build: Any) -> None:
    """Envoy's initialization waits for a response to each type it subscribed to: a
    gateway with no listeners yet gets an empty LDS response (else it would never
    become LIVE, and never register the Workload its listeners come from); the
    listeners that come later are sent as usual."""
    base = build.snapshot({"a": 8001}, {"/": "a"})
    empty = ProxySnapshot(resources={CLUSTER: base.get(CLUSTER), ENDPOINT: base.get(ENDPOINT),
                                     LISTENER: Resources.of({})})
    harness.hooks.initial = empty
    async with harness.client(delta=True) as c:
        await c.wait_for(empty)
        assert [(r.names, r.removed) for r in c.received if r.type_url == LISTENER] == [((), ())]
        harness.cache.set(build.node, base)
        await c.wait_for(base)
        assert set(c.resources[LISTENER]) == {"http"}


async def test_benchmark_clients_read_shared_responses_by_their_header(
        harness: Harness, build: Any) -> None:
    """The bench's fake clients (shared_responses) parse a response another client of
    the process already decoded by its header only (shoal's nonces name content): they
    end up holding exactly what a client that parses everything holds, both flavours."""
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
    harness.hooks.initial = snap
    later = build.snapshot({"a": 8001}, {"/": "b"})
    for delta in (True, False):
        clients = [harness.client(f"{name}{delta}.default", delta=delta,
                                  shared_responses=shared)
                   for name, shared in (("full", False), ("one", True), ("two", True))]
        for c in clients:
            await c.start()
        try:
            for c in clients:
                await c.wait_for(snap)
                harness.cache.set(c.node.id, later)
                await c.wait_for(later)
            full, one, two = (c.resources for c in clients)
            assert full == one == two and set(full[CLUSTER]) == {"a"}
            assert full[ROUTE]["local"] == later.get(ROUTE).items["local"]
        finally:
            for c in clients:
                await c.close()
