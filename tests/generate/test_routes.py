"""Routes and virtual hosts: domains, host resolution, subsets, weights, match mapping."""

from __future__ import annotations

from collections import Counter

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from shoal.xds.generate import GenerationContext, generate, outbound, outbound_http
from shoal.xds.types import ROUTE, Upstream

from .conftest import load_mesh, proxy

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
{http}"""


def with_vs(http: str, host: str = "details", ns: str = "default", name: str = "extra"):
    mesh = load_mesh(VS.format(name=name, ns=ns, host=host, http=http))
    return GenerationContext(mesh)


def details_routes(ctx: GenerationContext) -> list[rc_pb2.Route]:
    svc = ctx.mesh.service("default", "details")
    return ctx.routes(svc, svc.spec.ports[0])


def vhost(rc, name: str) -> rc_pb2.VirtualHost:
    return next(v for v in rc.virtual_hosts if v.name == name)


def test_domains_are_unique_across_virtual_hosts(ctx: GenerationContext) -> None:
    for ns in ("default", "shop", "elsewhere"):
        rc = outbound_http.route_table(ctx, ns)
        counts = Counter(d for v in rc.virtual_hosts for d in v.domains)
        assert [d for d, n in counts.items() if n > 1] == []


def test_short_names_only_in_own_namespace(ctx: GenerationContext) -> None:
    shop = outbound_http.route_table(ctx, "shop")
    default = outbound_http.route_table(ctx, "default")
    assert "catalog:50051" in vhost(shop, "catalog.shop.svc.cluster.local:50051").domains
    assert "catalog" in vhost(shop, "catalog.shop.svc.cluster.local:80").domains
    assert "catalog" not in {d for v in default.virtual_hosts for d in v.domains}
    assert "reviews" not in {d for v in shop.virtual_hosts for d in v.domains}
    assert "reviews.default:9080" in vhost(shop, "reviews.default.svc.cluster.local:9080").domains


def test_port_less_names_go_to_port_80_only(ctx: GenerationContext) -> None:
    rc = outbound_http.route_table(ctx, "shop")
    grpc = vhost(rc, "catalog.shop.svc.cluster.local:50051").domains
    web = vhost(rc, "catalog.shop.svc.cluster.local:80").domains
    assert all(d.endswith(":50051") for d in grpc)
    assert {"catalog", "catalog.shop", "catalog.shop.svc.cluster.local"} <= set(web)


def test_scopes_name_the_route_configuration_of_their_service_port(
        ctx: GenerationContext) -> None:
    scopes = outbound_http.scopes(ctx, "default", ctx.scope(None)).items
    reviews = scopes["reviews:9080"]
    assert reviews.route_configuration_name == "upstream|reviews.default.svc.cluster.local|9080"
    assert [f.string_key for f in reviews.key.fragments] == ["reviews:9080"]
    # the same host names as the single table of an ALLOW_ANY proxy, whose last virtual
    # host is its catch-all (scoped routes have none: an unknown host has no scope)
    table = outbound_http.route_table(ctx, "default")
    assert list(scopes) == [d for v in table.virtual_hosts[:-1] for d in v.domains]
    assert list(table.virtual_hosts[-1].domains) == ["*"]


def test_header_match_then_default_subset(ctx: GenerationContext) -> None:
    svc = ctx.mesh.service("default", "reviews")
    jason, rest = ctx.routes(svc, svc.spec.ports[0])
    assert jason.match.headers[0].name == "end-user"
    assert jason.match.headers[0].string_match.exact == "jason"
    assert jason.route.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local"
    assert rest.match.prefix == "/"
    assert rest.route.cluster == "outbound|9080|v1|reviews.default.svc.cluster.local"


def test_weights(ctx: GenerationContext) -> None:
    svc = ctx.mesh.service("default", "ratings")
    (route,) = ctx.routes(svc, svc.spec.ports[0])
    got = [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters]
    assert got == [("outbound|9080|v1|ratings.default.svc.cluster.local", 80),
                   ("outbound|9080|v2|ratings.default.svc.cluster.local", 20)]


def test_zero_weights_dropped_single_left_is_plain_cluster() -> None:
    ctx = with_vs("""  - route:
    - destination: {host: details}
      weight: 100
    - destination: {host: ratings}
      weight: 0""")
    (route,) = details_routes(ctx)
    assert route.route.cluster == "outbound|9080||details.default.svc.cluster.local"
    assert not route.route.HasField("weighted_clusters")


def test_unknown_subset_is_an_explicit_503() -> None:
    ctx = with_vs("""  - route:
    - destination: {host: reviews, subset: v9}""")
    (route,) = details_routes(ctx)
    assert route.direct_response.status == 503
    assert "subset 'v9'" in route.direct_response.body.inline_string
    cluster_names = set(outbound.table(ctx).clusters)
    assert not any("|v9|" in c for c in cluster_names)


def test_unknown_host_is_an_explicit_503() -> None:
    ctx = with_vs("""  - route:
    - destination: {host: nowhere}""")
    (route,) = details_routes(ctx)
    assert route.direct_response.status == 503
    assert "'nowhere'" in route.direct_response.body.inline_string


def test_hosts_resolve_relative_to_the_virtual_service_namespace() -> None:
    # a VS in "shop" for details.default: its short destination "catalog" is shop's
    ctx = with_vs("""  - route:
    - destination: {host: catalog, port: {number: 80}}""", host="details.default", ns="shop")
    (route,) = details_routes(ctx)
    assert route.route.cluster == "outbound|80||catalog.shop.svc.cluster.local"


def test_destination_port_needed_when_ambiguous() -> None:
    ctx = with_vs("""  - route:
    - destination: {host: catalog.shop}""")
    (route,) = details_routes(ctx)
    assert route.direct_response.status == 503
    assert "several ports" in route.direct_response.body.inline_string


def test_several_matches_are_or_and_port_filters() -> None:
    ctx = with_vs("""  - match:
    - uri: {prefix: /a}
    - uri: {exact: /b}
      method: {exact: GET}
    - uri: {prefix: /other-port}
      port: 1234
    timeout: 1.5s
    route:
    - destination: {host: details}""")
    a, b, *rest = details_routes(ctx)
    assert rest == []
    assert a.match.prefix == "/a" and b.match.path == "/b"
    assert b.match.headers[0].name == ":method"
    assert a.route.timeout.ToMilliseconds() == 1500
    assert a.route == b.route


def test_ignore_uri_case() -> None:
    ctx = with_vs("""  - match:
    - uri: {prefix: /API}
      ignoreUriCase: true
    - uri: {regex: "/v[0-9]+/.*"}
      ignoreUriCase: true
    route:
    - destination: {host: details}""")
    prefix, regex = details_routes(ctx)[:2]
    assert prefix.match.case_sensitive.value is False
    assert regex.match.safe_regex.regex == "(?i)/v[0-9]+/.*"


def test_default_route_and_retry_policy(ctx: GenerationContext) -> None:
    (route,) = details_routes(ctx)
    assert route.route.cluster == "outbound|9080||details.default.svc.cluster.local"
    assert route.route.timeout.ToSeconds() == 0
    rp = route.route.retry_policy
    assert rp.num_retries.value == 2 and list(rp.retriable_status_codes) == [503]
    assert rp.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    assert rp.host_selection_retry_max_attempts == 5


def test_upstream_route_config_has_the_service_routes(ctx: GenerationContext) -> None:
    p = proxy("newcomer", upstreams=(Upstream("reviews", 9080, 17000),))
    rc = generate(ctx, p).get(ROUTE).items["upstream|reviews.default.svc.cluster.local|9080"]
    (vh,) = rc.virtual_hosts
    assert list(vh.domains) == ["*"]
    out = vhost(outbound_http.route_table(ctx, "default"), "reviews.default.svc.cluster.local:9080")
    assert list(vh.routes) == list(out.routes)
