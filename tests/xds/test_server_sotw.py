"""SotW ADS against the fake client and raw gRPC streams."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from shoal.xds.server import Sync
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE

Harness = Any  # tests/conftest.py:Harness (not importable: see Builders)


def node(build: Any, node_id: str | None = None) -> base_pb2.Node:
    n = base_pb2.Node(id=node_id or build.node)
    n.metadata.CopyFrom(json_format.ParseDict(build.meta, struct_pb2.Struct()))
    return n


def cds_request(build: Any, nonce: str = "", version: str = "", **kw: Any) -> Any:
    return discovery_pb2.DiscoveryRequest(
        node=node(build), type_url=CLUSTER, response_nonce=nonce, version_info=version, **kw
    )


async def test_initial_push(harness: Harness, build: Any) -> None:
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a", "/b": "b"})
    harness.hooks.initial = snap
    async with harness.client() as c:
        await c.wait_for(snap)
        assert set(c.resources[CLUSTER]) == {"a", "b"}
        assert set(c.resources[ENDPOINT]) == {"a", "b"}
        assert set(c.resources[LISTENER]) == {"http"}
        assert set(c.resources[ROUTE]) == {"local"}
        assert harness.hooks.connected == [build.node]
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.SYNCED)
        st = harness.xds.status()[0]
        assert st.flavour == "sotw" and st.connected
        assert st.types[CLUSTER].acked_version == snap.get(CLUSTER).version
        assert st.to_dict()["sync"] == "SYNCED"


async def test_update_is_pushed_in_order(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"}, listen_port=15001)
    harness.hooks.initial = snap1
    async with harness.client() as c:
        await c.wait_for(snap1)
        n = len(c.received)
        # every type changes: new cluster + endpoints, new listener port, new routes
        snap2 = build.snapshot({"a": 8001, "c": 8003}, {"/": "c"}, listen_port=15002)
        harness.cache.set(build.node, snap2)
        await c.wait_for(snap2)
        order = [r.type_url for r in c.received[n:]]
        # EDS may come twice (version change, then the new cluster's subscription)
        assert list(dict.fromkeys(order)) == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
        assert order == sorted(order, key=PUSH_ORDER.index)
        assert set(c.resources[ENDPOINT]) == {"a", "c"}


async def test_cluster_removal_is_make_before_break(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001, "b": 8002}, {"/": "a", "/b": "b"})
    harness.hooks.initial = snap1
    async with harness.client() as c:
        await c.wait_for(snap1)
        n = len(c.received)
        snap2 = build.snapshot({"a": 8001}, {"/": "a"})
        harness.cache.set(build.node, snap2)
        await c.wait_for(snap2)
        log = [(r.type_url, set(r.names)) for r in c.received[n:]]
        cds = [i for i, (t, _) in enumerate(log) if t == CLUSTER]
        rds = [i for i, (t, _) in enumerate(log) if t == ROUTE]
        assert log[cds[0]][1] == {"a", "b"}  # first CDS keeps the removed cluster
        assert log[cds[-1]][1] == {"a"}  # ... until the routes no longer use it
        assert rds and rds[0] < cds[-1]
        assert set(c.resources[CLUSTER]) == {"a"}


async def test_nack_is_recorded_and_not_looped(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    harness.hooks.initial = snap1
    async with harness.client() as c:
        await c.wait_for(snap1)
        c.nack(LISTENER, "bad listener: stat_prefix")
        snap2 = build.snapshot({"a": 8001}, {"/": "a"}, stat_prefix="")
        harness.cache.set(build.node, snap2)
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.NACKED)
        st = harness.xds.status()[0]
        nack = st.types[LISTENER].nack
        assert nack is not None and nack.message == "bad listener: stat_prefix"
        assert nack.version == snap2.get(LISTENER).version
        assert st.types[LISTENER].acked_version == snap1.get(LISTENER).version
        # Another change goes through; the rejected listener is not re-sent.
        snap3 = build.snapshot({"a": 8001}, {"/x": "a"}, stat_prefix="")
        harness.cache.set(build.node, snap3)
        await c.wait_for({ROUTE: snap3.get(ROUTE).version})
        lds = [r for r in c.received if r.type_url == LISTENER]
        assert [r.nacked for r in lds] == [False, True]
        assert harness.xds.status()[0].sync == Sync.NACKED
        # A later good version is ACKed: the NACK goes away.
        c.accept(LISTENER)
        snap4 = build.snapshot({"a": 8001}, {"/x": "a"}, stat_prefix="fixed")
        harness.cache.set(build.node, snap4)
        await c.wait_for(snap4)
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.SYNCED)
        assert harness.xds.status()[0].types[LISTENER].nack is None


async def test_stale_nonce_is_ignored(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    harness.hooks.initial = snap1
    async with grpc.aio.insecure_channel(harness.address) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        await call.write(cds_request(build))
        r1 = await call.read()
        assert r1.version_info == snap1.get(CLUSTER).version
        await call.write(cds_request(build, r1.nonce, r1.version_info))  # ACK
        snap2 = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
        harness.cache.set(build.node, snap2)
        r2 = await call.read()
        assert r2.version_info == snap2.get(CLUSTER).version
        # A NACK carrying the old nonce is stale: ignored entirely (no record, no response).
        stale = cds_request(build, r1.nonce, r1.version_info)
        stale.error_detail.CopyFrom(status_pb2.Status(code=3, message="stale"))
        await call.write(stale)
        await call.write(cds_request(build, r2.nonce, r2.version_info))  # ACK r2
        snap3 = build.snapshot({"b": 8002}, {"/": "b"})
        harness.cache.set(build.node, snap3)
        r3 = await call.read()  # the next response is for snap3, nothing in between
        assert r3.version_info == snap3.get(CLUSTER).version
        status = harness.xds.status()[0]
        assert status.types[CLUSTER].nack is None
        assert status.types[CLUSTER].acked_version == snap2.get(CLUSTER).version
        call.cancel()


async def test_reconnect_with_current_version_is_not_repushed(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    snap2 = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
    harness.hooks.initial = snap1
    async with grpc.aio.insecure_channel(harness.address) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        # As after a control-plane restart: the client already has snap1's clusters.
        await call.write(cds_request(build, version=snap1.get(CLUSTER).version))
        await build.eventually(lambda: bool(harness.xds.status()))
        # nothing was sent, yet the proxy counts as applied (proxy-status shows it synced)
        await build.eventually(  # (the type's entry appears once the request is read)
            lambda: (t := harness.xds.status()[0].types.get(CLUSTER)) is not None
            and t.acked_version == snap1.get(CLUSTER).version)
        harness.cache.set(build.node, snap2)
        r = await call.read()  # the first response is the change, not a re-push
        assert r.version_info == snap2.get(CLUSTER).version
        call.cancel()


async def test_invalid_node_is_rejected(harness: Harness, build: Any) -> None:
    async with grpc.aio.insecure_channel(harness.address) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        await call.write(
            discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="x"), type_url=CLUSTER)
        )
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call.read()
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "node.metadata.WORKLOAD: is required" in (exc.value.details() or "")
    assert harness.hooks.connected == []


async def test_reconnect_of_same_node_keeps_newest_stream(harness: Harness, build: Any) -> None:
    snap1 = build.snapshot({"a": 8001}, {"/": "a"})
    harness.hooks.initial = snap1
    old = harness.client()
    await old.start()
    await old.wait_for(snap1)
    async with harness.client() as new:  # overlaps the old stream, like an Envoy reconnect
        await new.wait_for(snap1)
        new_stream = harness.xds.status()[0].stream_id
        await old.close()
        await build.eventually(lambda: harness.xds.connected() == {build.node: 1})
        assert harness.hooks.disconnected == []
        st = harness.xds.status()[0]
        assert st.connected and st.stream_id == new_stream
        snap2 = build.snapshot({"a": 8001}, {"/": "b"})
        harness.cache.set(build.node, snap2)
        await new.wait_for(snap2)
    await build.eventually(lambda: harness.hooks.disconnected == [build.node])
    assert harness.hooks.connected == [build.node, build.node]
    assert not harness.xds.status()[0].connected


async def test_slow_client_is_cut(make_harness: Any, build: Any) -> None:
    harness = await make_harness(ack_timeout=0.5)
    snap = build.snapshot({"a": 8001}, {"/": "a"})
    harness.cache.set(build.node, snap)
    async with grpc.aio.insecure_channel(harness.address) as ch:
        # A client that does not keep up: it never reads nor answers its responses.
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        await call.write(cds_request(build))
        await build.eventually(lambda: harness.hooks.disconnected == [build.node])
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            while True:  # what was buffered, then the status
                await call.read()
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "not acknowledged" in (exc.value.details() or "")
    assert not harness.xds.status()[0].connected


async def test_proxies_with_the_same_resources_share_one_response(
        harness: Harness, build: Any) -> None:
    """A response is built once per content (packing.ResponseCache): two proxies with
    equal snapshots are sent one cached response, and a change of content is a new
    response with a new nonce, never a stale one."""
    snap = build.snapshot({"a": 8001, "b": 8002}, {"/": "a"})
    harness.hooks.initial = snap
    async with harness.client("one.default") as one, harness.client("two.default") as two:
        await one.wait_for(snap)
        await two.wait_for(snap)
        bodies = harness.cache.responses
        types = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
        assert len(bodies) == len(types)  # one per type, not one per type and proxy
        for c in (one, two):
            assert set(c.resources[CLUSTER]) == {"a", "b"}
        changed = build.snapshot({"a": 8001, "b": 8002}, {"/": "b"})
        for c in (one, two):
            harness.cache.set(c.node.id, changed)
            await c.wait_for(changed)
        assert len(bodies) == len(types) + 1  # the new route configuration only
        assert two.resources[ROUTE]["local"] == changed.get(ROUTE).items["local"]



async def test_endpoints_and_routes_send_only_what_changed(harness: Harness, build: Any) -> None:
    """SotW EDS/RDS responses carry the resources that changed (the protocol allows it
    for every type but LDS and CDS): one workload moving is one ClusterLoadAssignment on
    the wire, not every service's; the client keeps the rest. After a NACK, complete."""
    backends = {f"svc{i}": 8000 + i for i in range(20)}
    snap1 = build.snapshot(backends, {"/": "svc0"})
    harness.hooks.initial = snap1
    async with harness.client() as c:
        await c.wait_for(snap1)
        first_eds = [r for r in c.received if r.type_url == ENDPOINT][-1]
        assert set(first_eds.names) == set(backends)  # the first response is complete
        n = len(c.received)
        moved = {**backends, "svc7": 9007}
        snap2 = build.snapshot(moved, {"/": "svc0"})
        harness.cache.set(build.node, snap2)
        await c.wait_for(snap2)
        sent = [(r.type_url, set(r.names)) for r in c.received[n:]]
        assert sent == [(ENDPOINT, {"svc7"})]  # CDS, LDS, RDS did not change at all
        assert set(c.resources[ENDPOINT]) == set(backends)  # the client kept the others
        port = c.resources[ENDPOINT]["svc7"].endpoints[0].lb_endpoints[0].endpoint
        assert port.address.socket_address.port_value == 9007
        # a NACKed update leaves the client unsure: the next response is complete
        c.nack(ENDPOINT)
        snap3 = build.snapshot({**moved, "svc3": 9003}, {"/": "svc0"})
        harness.cache.set(build.node, snap3)
        await build.eventually(lambda: harness.xds.status()[0].sync == Sync.NACKED)
        c.accept(ENDPOINT)
        n = len(c.received)
        snap4 = build.snapshot({**moved, "svc3": 9103}, {"/": "svc0"})
        harness.cache.set(build.node, snap4)
        await c.wait_for(snap4)
        eds = [set(r.names) for r in c.received[n:] if r.type_url == ENDPOINT]
        assert eds == [set(backends)]


async def test_proxies_with_the_same_large_subscription_share_their_parsed_acks(
        harness: Harness, build: Any) -> None:
    """Each SotW ACK repeats the client's whole EDS subscription (thousands of names at a
    thousand services): the server parses equal ones once and every stream reads that one
    message. Both proxies still converge through changes, so nothing a stream reads is
    taken out of the shared request."""
    backends = {f"outbound|8080||svc-{i}.default.svc.cluster.local": 8000 + i
                for i in range(200)}
    snap = build.snapshot(backends, {"/": next(iter(backends))})
    harness.hooks.initial = snap
    async with harness.client("one.default") as one, harness.client("two.default") as two:
        for c in (one, two):
            await c.wait_for(snap)
        assert harness.xds.sotw_requests.bytes > 200 * 45  # the EDS ACK, held once
        for port in (9001, 9002):
            changed = build.snapshot({**backends, next(iter(backends)): port},
                                     {"/": next(iter(backends))})
            for c in (one, two):
                harness.cache.set(c.node.id, changed)
            for c in (one, two):
                await c.wait_for(changed)
                assert c.resources[ENDPOINT] == dict(changed.get(ENDPOINT).items)
