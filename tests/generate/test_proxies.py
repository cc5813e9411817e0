"""Per-proxy parts (inbound, upstreams) and sharing of everything else across proxies."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate, outbound
from shoal.xds.generate.protocol import HTTP_PROTOCOL_OPTIONS
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    Proxy,
    ProxyMetadata,
    Upstream,
)

from .conftest import GOLDEN_PROXIES, HERE, load_mesh, proxy


def network_filter(listener, kind):
    """The filter of this type in the listener's first filter chain (security filters,
    e.g. RBAC, may come before it)."""
    msg = kind()
    assert any(f.typed_config.Unpack(msg) for f in listener.filter_chains[0].filters)
    return msg


def test_unregistered_proxy_gets_outbound_only(ctx: GenerationContext) -> None:
    snap = generate(ctx, proxy("newcomer"))
    assert list(snap.get(LISTENER).items) == ["outbound_http"]
    # the app's HTTP proxy: a scope per host name, a route configuration per service port
    assert "reviews.default.svc.cluster.local:9080" in snap.get(SCOPED_ROUTE).items
    assert all(n.startswith("upstream|") for n in snap.get(ROUTE).items)
    assert not any(n.startswith("inbound|") for n in snap.get(CLUSTER).items)
    assert snap.mesh_revision == 7


def test_replicas_share_one_snapshot(ctx: GenerationContext) -> None:
    """Proxies that differ only in node id (replicas of a workload) are computed once
    per mesh snapshot; any difference in what they declare gives each its own."""
    one = proxy("reviews-v1", app_ports={"http": 9080})
    replica = Proxy(node_id="reviews-v1-7f9c.default", namespace=one.namespace,
                    metadata=ProxyMetadata(workload="reviews-v1", outbound_port=15001,
                                           app_ports={"http": 9080}))
    snap = generate(ctx, one)
    assert generate(ctx, replica) is snap
    other = proxy("reviews-v1", app_ports={"http": 9081})
    assert generate(ctx, other) is not snap
    assert generate(ctx, other).get(CLUSTER).items.keys() != snap.get(CLUSTER).items.keys()


def test_outbound_listener(ctx: GenerationContext) -> None:
    lis = generate(ctx, proxy("newcomer", outbound_port=15999)).get(LISTENER).items[
        "outbound_http"]
    assert lis.address.socket_address.address == "127.0.0.1"
    assert lis.address.socket_address.port_value == 15999
    hcm = network_filter(lis, hcm_pb2.HttpConnectionManager)
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.scoped_routes.name == "outbound_http"
    assert hcm.scoped_routes.scoped_rds.scoped_rds_config_source.HasField("ads")
    assert hcm.scoped_routes.rds_config_source.HasField("ads")
    (fragment,) = hcm.scoped_routes.scope_key_builder.fragments
    assert fragment.header_value_extractor.name == ":authority"


def test_inbound_http_listener_and_cluster(ctx: GenerationContext) -> None:
    snap = generate(ctx, GOLDEN_PROXIES["reviews-v2.default"])
    lis = snap.get(LISTENER).items["inbound|http|15006"]
    assert lis.address.socket_address.address == "10.0.0.22"
    hcm = network_filter(lis, hcm_pb2.HttpConnectionManager)
    assert hcm.stat_prefix == "inbound_15006"
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.route.cluster == "inbound|9081|http"
    cluster = snap.get(CLUSTER).items["inbound|9081|http"]
    assert cluster.type == cluster_pb2.Cluster.STATIC
    sa = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.1", 9081)
    assert HTTP_PROTOCOL_OPTIONS not in cluster.typed_extension_protocol_options


def test_inbound_tcp_and_grpc(ctx: GenerationContext) -> None:
    mongo = generate(ctx, GOLDEN_PROXIES["mongodb-v1.default"])
    tcp = network_filter(mongo.get(LISTENER).items["inbound|mongo|15017"], tcp_proxy_pb2.TcpProxy)
    assert tcp.cluster == "inbound|27017|mongo"
    catalog = generate(ctx, GOLDEN_PROXIES["catalog-1.shop"]).get(CLUSTER).items
    assert HTTP_PROTOCOL_OPTIONS in catalog["inbound|50051|grpc"].typed_extension_protocol_options
    assert HTTP_PROTOCOL_OPTIONS not in catalog["inbound|8080|web"].typed_extension_protocol_options
    assert HTTP_PROTOCOL_OPTIONS in catalog[
        "outbound|50051||catalog.shop.svc.cluster.local"].typed_extension_protocol_options


def test_two_services_on_one_endpoint_port_share_a_listener() -> None:
    extra = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews-alias}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]"""
    snap = generate(GenerationContext(load_mesh(extra)), GOLDEN_PROXIES["reviews-v2.default"])
    inbound = [n for n in snap.get(LISTENER).items if n.startswith("inbound|")]
    assert inbound == ["inbound|http|15006"]


def test_upstream_listeners(ctx: GenerationContext) -> None:
    snap = generate(ctx, GOLDEN_PROXIES["productpage-v1.default"])
    lds = snap.get(LISTENER).items
    assert "upstream|no-such-service|1234" not in lds
    tcp = network_filter(lds["upstream|mongodb|27017"], tcp_proxy_pb2.TcpProxy)
    assert tcp.cluster == "outbound|27017||mongodb.default.svc.cluster.local"
    grpc = lds["upstream|catalog.shop|50051"]
    assert grpc.address.socket_address.port_value == 16051
    hcm = network_filter(grpc, hcm_pb2.HttpConnectionManager)
    assert hcm.rds.route_config_name == "upstream|catalog.shop.svc.cluster.local|50051"
    assert hcm.rds.route_config_name in snap.get(ROUTE).items


def test_clashing_local_ports_keep_the_first() -> None:
    p = proxy("newcomer", upstreams=(Upstream("mongodb", 27017, 15001),  # = outbound port
                                     Upstream("details", 9080, 16000),
                                     Upstream("ratings", 9080, 16000)))
    lds = generate(GenerationContext(load_mesh()), p).get(LISTENER).items
    assert sorted(lds) == ["outbound_http", "upstream|details|9080"]


def test_endpoints_grouped_by_locality_with_weights(ctx: GenerationContext) -> None:
    cla = outbound.table(ctx).load_assignments["outbound|9080||reviews.default.svc.cluster.local"]
    got = [((g.locality.region, g.locality.zone, g.locality.sub_zone),
            [(e.endpoint.address.socket_address.address, e.load_balancing_weight.value)
             for e in g.lb_endpoints]) for g in cla.endpoints]
    assert got == [(("eu-west", "eu-west-1a", ""), [("10.0.0.21", 1)]),
                   (("eu-west", "eu-west-1b", ""), [("10.0.0.22", 2)]),
                   (("eu-west", "eu-west-1b", "rack-7"), [("10.0.0.23", 1)])]
    v2 = outbound.table(ctx).load_assignments["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert [e.endpoint.address.socket_address.port_value
            for g in v2.endpoints for e in g.lb_endpoints] == [15006]
    web = outbound.table(ctx).load_assignments["outbound|80||catalog.shop.svc.cluster.local"]
    assert web.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 15080


def test_a_thousand_proxies_share_the_common_objects() -> None:
    ctx = GenerationContext(load_mesh())
    proxies = [proxy(f"app-{i}", "default" if i % 2 else "shop",
                     upstreams=(Upstream("mongodb.default", 27017, 16017),
                                Upstream("ratings.default", 9080, 16080)))
               for i in range(1000)]
    snaps = [generate(ctx, p) for p in proxies]
    first = {ns: next(s for s, p in zip(snaps, proxies, strict=True) if p.namespace == ns)
             for ns in ("default", "shop")}
    for snap, p in zip(snaps, proxies, strict=True):
        ref = first[p.namespace]
        assert snap.get(ENDPOINT) is ref.get(ENDPOINT)
        assert snap.get(SCOPED_ROUTE) is ref.get(SCOPED_ROUTE)
        for t in (CLUSTER, LISTENER, ROUTE):
            items, ref_items = snap.get(t).items, ref.get(t).items
            assert items.keys() == ref_items.keys()
            assert all(items[n] is ref_items[n] for n in items)
            assert snap.get(t).version == ref.get(t).version
    # short names resolve in their own namespace only: the scopes differ by namespace
    assert "reviews" in first["default"].get(SCOPED_ROUTE).items
    assert "reviews" not in first["shop"].get(SCOPED_ROUTE).items


def test_versions_follow_content() -> None:
    a = generate(GenerationContext(load_mesh()), GOLDEN_PROXIES["reviews-v2.default"])
    b = generate(GenerationContext(load_mesh(revision=8)), GOLDEN_PROXIES["reviews-v2.default"])
    assert a.version == b.version
    mesh = load_mesh()
    wl = mesh.workload("default", "reviews-v1")
    moved = wl.model_copy(update={"spec": wl.spec.model_copy(update={"address": "10.9.9.9"})})
    others = [r for r in mesh.resources if r.key != wl.key]
    mesh2 = MeshSnapshot.build([*others, moved], revision=9)
    c = generate(GenerationContext(mesh2), GOLDEN_PROXIES["reviews-v2.default"])
    assert c.get(ENDPOINT).version != a.get(ENDPOINT).version
    assert c.get(CLUSTER).version == a.get(CLUSTER).version
    assert c.get(LISTENER).version == a.get(LISTENER).version


def test_a_route_change_leaves_the_other_route_configurations_the_same_objects() -> None:
    """ADR 0036: the next context reuses what is equal in content, so a change to the
    ratings VirtualService makes a new ratings route configuration and keeps every other
    one -- and the scopes -- the very same objects (the SotW change set is then found by
    identity, and nothing unchanged is packed again)."""
    text = (HERE / "mesh.yaml").read_text()
    before = MeshSnapshot.build(parse_yaml(text), revision=7)
    after = MeshSnapshot.build(parse_yaml(text.replace("weight: 80", "weight: 70").replace(
        "weight: 20", "weight: 30")),
                               revision=8)
    ctx1 = GenerationContext(before)
    snap1 = generate(ctx1, proxy("newcomer"))
    snap2 = generate(GenerationContext(after, ctx1, frozenset({"VirtualService"})),
                     proxy("newcomer"))
    old, new = snap1.get(ROUTE).items, snap2.get(ROUTE).items
    assert old.keys() == new.keys()
    changed = {n for n in new if new[n] is not old[n]}
    assert changed == {"upstream|ratings.default.svc.cluster.local|9080"}
    assert snap2.get(SCOPED_ROUTE) is snap1.get(SCOPED_ROUTE)
    assert snap2.get(ROUTE).version != snap1.get(ROUTE).version
