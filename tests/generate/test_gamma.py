"""Gateway API mesh routes (GAMMA, docs/adr/0035): HTTPRoutes with a Service parent become
the routes of every consumer's sidecar, with the Gateway API's semantics — precedence,
segment-wise prefixes, proportional weights, 500 without backends, filters — and Envoy
accepts what they generate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.analyze import analyze
from shoal.api.gatewayapi import RequestRedirect
from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.registry.gamma import milliseconds, percentages, redirect_port
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import CLUSTER

from .conftest import GOLDEN_PROXIES, load_mesh
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap
from .tables import outbound_table

VERSIONS = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews-v1}
spec: {selector: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews-v2}
spec: {selector: {app: reviews, version: v2}, ports: [{name: http, port: 9080}]}
"""


def route(rules: str, name: str = "reviews", parent: str = "reviews") -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}, port: 9080}}]
  rules:
{rules}
"""


def reviews_vhost(m: MeshSnapshot) -> rc_pb2.VirtualHost:
    snap = generate(GenerationContext(m), GOLDEN_PROXIES["productpage-v1.default"])
    rc = outbound_table(snap)
    return next(vh for vh in rc.virtual_hosts
                if vh.name == "reviews.default.svc.cluster.local:9080")


def mesh(*docs: str) -> MeshSnapshot:
    return load_mesh("---\n".join([VERSIONS, *docs]))


def without_fixture_vs(m: MeshSnapshot, host: str = "reviews") -> MeshSnapshot:
    """The fixture mesh routes reviews (and catalog) with VirtualServices, which would win
    (ADR 0035)."""
    keep = [r for r in m.resources if not (r.kind == "VirtualService" and any(
        h.split(".")[0] == host for h in r.spec.hosts))]
    return MeshSnapshot.build(keep, m.revision, m.config)


def test_weights_split_the_parent_service_between_backends() -> None:
    m = without_fixture_vs(mesh(route("""  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 1}
    - {name: reviews-v2, port: 9080, weight: 3}""")))
    [r] = reviews_vhost(m).routes
    clusters = {c.name: c.weight.value for c in r.route.weighted_clusters.clusters}
    assert clusters == {"outbound|9080||reviews-v1.default.svc.cluster.local": 25,
                        "outbound|9080||reviews-v2.default.svc.cluster.local": 75}


def test_precedence_exact_then_longest_prefix_then_method_headers_query() -> None:
    rules = """  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST,
               headers: [{name: x-a, value: "1"}]}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: Exact, value: /api/exact}}]
    backendRefs: [{name: reviews-v2, port: 9080}]"""
    m = without_fixture_vs(mesh(route(rules)))
    names = [r.name for r in reviews_vhost(m).routes]
    assert names == ["default.reviews.4.0", "default.reviews.3.0", "default.reviews.2.0",
                     "default.reviews.1.0", "default.reviews.0.0"]


def test_the_oldest_route_wins_a_tie() -> None:
    older = route("  - backendRefs: [{name: reviews-v1, port: 9080}]", name="b-older")
    newer = route("  - backendRefs: [{name: reviews-v2, port: 9080}]", name="a-newer")
    older = older.replace("metadata: {name: b-older}", "metadata: {name: b-older, "
                          "creationTimestamp: '2026-01-01T00:00:00Z'}")
    newer = newer.replace("metadata: {name: a-newer}", "metadata: {name: a-newer, "
                          "creationTimestamp: '2026-06-01T00:00:00Z'}")
    m = without_fixture_vs(mesh(older, newer))
    assert reviews_vhost(m).routes[0].name == "default.b-older.0.0"


def test_a_path_prefix_matches_whole_segments() -> None:
    m = without_fixture_vs(mesh(route("""  - matches: [{path: {type: PathPrefix, value: /api/}}]
    backendRefs: [{name: reviews-v1, port: 9080}]""")))
    regex = reviews_vhost(m).routes[0].match.safe_regex.regex
    assert re.fullmatch(regex, "/api") and re.fullmatch(regex, "/api/x")
    assert not re.fullmatch(regex, "/apix")


def test_no_usable_backend_answers_500() -> None:
    m = without_fixture_vs(mesh(route("""  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 0}
    - {name: no-such-service, port: 9080}""")))
    [r] = reviews_vhost(m).routes
    assert r.direct_response.status == 500


def test_the_share_of_a_backend_that_cannot_be_used_answers_500() -> None:
    """Weighted backends, one missing: its share gets 500 (Envoy's answer for a weighted
    cluster it has not, set to 500), the others keep theirs."""
    m = without_fixture_vs(mesh(route("""  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 3}
    - {name: no-such-service, port: 9080, weight: 1}""")))
    [r] = reviews_vhost(m).routes
    shares = {c.name: c.weight.value for c in r.route.weighted_clusters.clusters}
    assert shares == {"outbound|9080||reviews-v1.default.svc.cluster.local": 75,
                      "unusable-backend": 25}
    assert r.route.cluster_not_found_response_code == rc_pb2.RouteAction.INTERNAL_SERVER_ERROR
    clusters = generate(GenerationContext(m), GOLDEN_PROXIES["productpage-v1.default"]
                        ).get(CLUSTER).items
    assert "unusable-backend" not in clusters  # (no cluster: that is the point)
    # analyze names the route's backend, not the translation's stand-in for its share
    assert {(f.code, f.resource) for f in analyze(m.resources)} == {
        ("backend-not-found", "HTTPRoute default/reviews")}


def test_filters_become_header_operations_rewrites_and_mirrors() -> None:
    m = without_fixture_vs(mesh(route("""  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: a}], remove: [x-drop]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-added, value: b}]}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: reviews-v2, port: 9080}, percent: 10}
    backendRefs: [{name: reviews-v1, port: 9080}]
    timeouts: {request: 1m30s}""")))
    [r] = reviews_vhost(m).routes
    assert [h.header.key for h in r.request_headers_to_add] == ["x-set"]
    assert list(r.request_headers_to_remove) == ["x-drop"]
    assert [h.header.key for h in r.response_headers_to_add] == ["x-added"]
    rw = r.route.regex_rewrite
    assert re.sub(rw.pattern.regex, rw.substitution.replace("\\1", r"\1"), "/old/x") == "/new/x"
    assert r.route.timeout.seconds == 90
    assert r.route.request_mirror_policies[0].cluster.endswith("reviews-v2.default.svc."
                                                               "cluster.local")


def test_retries_and_timeouts_follow_gep_1731() -> None:
    """``retry`` retries its codes and connection failures, resets and per-try timeouts
    (``backendRequest``); ``attempts: 0`` disables retries; ``request`` bounds them all;
    ``0s`` is no timeout."""
    m = without_fixture_vs(mesh(route("""  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
    retry: {codes: [500, 502], attempts: 3}
    timeouts: {request: 400ms, backendRequest: 200ms}
  - matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
    retry: {attempts: 0}
    timeouts: {request: 0s}""")))
    a, b = reviews_vhost(m).routes
    policy = a.route.retry_policy
    assert set(policy.retry_on.split(",")) >= {"connect-failure", "refused-stream", "reset",
                                               "retriable-status-codes"}
    assert list(policy.retriable_status_codes) == [500, 502]
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.ToMilliseconds() == 200
    assert a.route.timeout.ToMilliseconds() == 400
    assert not b.route.HasField("retry_policy") and b.route.timeout.ToMilliseconds() == 0


@pytest.mark.parametrize(("scheme", "port", "listener", "expected"), [
    (None, None, ("http", 8080), 8080),   # the listener's port
    (None, None, ("http", 80), None),     # ... left out when it is the scheme's own
    (None, 80, ("https", 443), 80),       # https on 80: said
    ("https", None, ("http", 8080), None),  # a scheme: its well-known port
    ("https", 8443, ("http", 80), 8443),
    ("http", 80, ("https", 443), None),
    (None, 8083, None, 8083),             # on a Service: as written
    (None, None, None, None),
])
def test_a_redirect_port_follows_the_spec(scheme: str | None, port: int | None,
                                          listener: tuple[str, int] | None,
                                          expected: int | None) -> None:
    rd = RequestRedirect.model_validate({"scheme": scheme, "port": port})
    assert redirect_port(rd, listener) == expected


def test_a_redirect_replaces_the_matched_prefix_only() -> None:
    """RequestRedirect with ReplacePrefixMatch: Envoy rewrites the matched prefix of the
    path it redirects to (Istio's %PREFIX()% marker, honoured on translated routes only:
    in a VirtualService written by hand the text is a path, as in Istio)."""
    m = without_fixture_vs(mesh(route("""  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}""")))
    [r] = reviews_vhost(m).routes
    rw = r.redirect.regex_rewrite
    for before, after in (("/old/x/y", "/new/x/y"), ("/old", "/new")):
        assert re.sub(rw.pattern.regex, rw.substitution.replace("\\1", r"\1"),
                      before) == after
    assert not r.redirect.path_redirect
    base = without_fixture_vs(mesh())
    literal = MeshSnapshot.build([*base.resources, *parse_yaml("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-literal}
spec:
  hosts: [reviews]
  http: [{redirect: {uri: "%PREFIX()%/new"}}]
""")], base.revision, base.config)
    [r] = [x for x in reviews_vhost(literal).routes if x.HasField("redirect")]
    assert r.redirect.path_redirect == "%PREFIX()%/new"


def test_a_virtual_service_for_the_same_host_wins_and_analyze_says_so() -> None:
    m = mesh(route("  - backendRefs: [{name: reviews-v2, port: 9080}]"))
    assert not any(r.metadata.name.startswith("httproutes.")
                   for r in m.of_kind("VirtualService"))
    found = [f for f in analyze(m.resources) if f.code == "httproute-shadowed"]
    assert found and "VirtualService" in found[0].message


@pytest.mark.parametrize(("rules", "says"), [
    ("  - backendRefs: [{name: x}]", "port: is required"),
    ("  - backendRefs: [{kind: 'Not A Kind', name: x, port: 1}]", "is not a kind"),
    ("  - filters: [{type: CORS, cors: {}}]", "filters[0].cors: is not supported"),
    ("  - filters: [{type: CORS}]", "type: CORS is not supported by shoal yet"),
    ("  - filters: [{type: URLRewrite}]", "needs exactly its own field"),
    ("  - matches: [{path: {type: Exact, value: /a}}]\n"
     "    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
     "replacePrefixMatch: /b}}}]", "ReplacePrefixMatch needs PathPrefix matches"),
    ("  - matches: [{path: {type: RegularExpression, value: '(?=x)'}}]", "RE2"),
    ("  - timeouts: {request: soon}", "not a Gateway API duration"),
])
def test_refusals_name_the_field(rules: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_yaml(route(rules))
    assert says in str(e.value)


def test_other_parents_are_refused_by_name() -> None:
    """A Gateway parent is a Gateway's route (test_gateway_api_gateways.py); other kinds
    of parent are refused by name."""
    other = route("  - backendRefs: []").replace('{group: "", kind: Service, name: reviews, '
                                                 'port: 9080}', "{kind: Mesh, name: m}")
    with pytest.raises(ValidationError, match="Mesh parents are not supported"):
        parse_yaml(other)


def test_a_consumer_route_applies_to_its_namespace_only() -> None:
    """GAMMA: a route in namespace shop on default's reviews changes the calls of shop's
    sidecars only, replaces the producer's routes for them (404 for what it does not
    match) and may send to its parent Service without a ReferenceGrant."""
    producer = route("  - backendRefs: [{name: reviews-v1, port: 9080}]")
    consumer = route("""  - matches: [{path: {type: PathPrefix, value: /shop}}]
    backendRefs: [{name: reviews, namespace: default, port: 9080}]""", name="from-shop"
                     ).replace("metadata: {name: from-shop}",
                               "metadata: {name: from-shop, namespace: shop}").replace(
        'name: reviews, port: 9080}]\n  rules', 'name: reviews, namespace: default, '
        'port: 9080}]\n  rules')
    consumer = consumer.replace('parentRefs: [{group: "", kind: Service, name: reviews, '
                                'port: 9080}]', 'parentRefs: [{group: "", kind: Service, '
                                'name: reviews, namespace: default, port: 9080}]')
    m = without_fixture_vs(mesh(producer, consumer))

    def vhost(node: str) -> rc_pb2.VirtualHost:
        snap = generate(GenerationContext(m), GOLDEN_PROXIES[node])
        rc = outbound_table(snap)
        return next(v for v in rc.virtual_hosts
                    if v.name == "reviews.default.svc.cluster.local:9080")

    mine = [r.name for r in vhost("productpage-v1.default").routes]
    assert mine == ["default.reviews.0.0"]  # the producer's route only
    theirs = vhost("catalog-1.shop").routes
    # the consumer's rule, then its 404 for the rest: the producer's rule after it is
    # never reached from shop
    assert [r.name for r in theirs][:2] == ["shop.from-shop.0.0",
                                            "consumer.shop.9080.unmatched"]
    assert theirs[0].route.cluster == "outbound|9080||reviews.default.svc.cluster.local"
    assert theirs[1].direct_response.status == 404


@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=16))
def test_weights_as_percentages_sum_to_100_within_1_percent(weights: list[int]) -> None:
    out = percentages(weights)
    assert sum(out) == 100
    total = sum(weights)
    assert all(abs(p - w * 100 / total) < 1 for p, w in zip(out, weights, strict=True))


def test_durations() -> None:
    assert milliseconds("1h2m3s4ms") == 3_723_004
    assert milliseconds("0s") == 0


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_the_routes(tmp_path: Path) -> None:
    sample = (Path(__file__).resolve().parents[2] / "samples" / "gateway-api"
              / "reviews-50-50.yaml").read_text()
    m = without_fixture_vs(load_mesh(sample))
    node = "productpage-v1.default"
    snap = generate(GenerationContext(m), GOLDEN_PROXIES[node])
    res = envoy_validate(static_bootstrap(snap, node), tmp_path / "b.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]


def grpc_route(rules: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: catalog, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: catalog, port: 50051}}]
  rules:
{rules}
"""


def test_grpc_route_matches_service_and_method_as_paths() -> None:
    from shoal.api.gatewayapi import GRPCMethodMatch
    from shoal.registry.gamma import grpc_path

    assert grpc_path(GRPCMethodMatch(service="a.B", method="C")).value == "/a.B/C"
    regex = grpc_path(GRPCMethodMatch(service="a.B")).value
    assert re.fullmatch(regex, "/a.B/C") and not re.fullmatch(regex, "/a.Bx/C")
    assert re.fullmatch(grpc_path(GRPCMethodMatch(method="C")).value, "/x.Y/C")
    m = load_mesh(grpc_route("""  - matches: [{method: {service: shoal.Catalog}}]
    backendRefs: [{name: catalog, port: 50051}]
  - matches: [{method: {service: shoal.Catalog, method: Get}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]
    backendRefs: [{name: catalog, port: 50051}]"""))
    m = without_fixture_vs(m, "catalog")
    snap = generate(GenerationContext(m), GOLDEN_PROXIES["productpage-v1.default"])
    rc = outbound_table(snap)
    vh = next(v for v in rc.virtual_hosts if v.name == "catalog.shop.svc.cluster.local:50051")
    # the most specific (service and method) first
    assert [r.match.path or r.match.safe_regex.regex for r in vh.routes][:2] == [
        "/shoal.Catalog/Get", "/shoal\\.Catalog/[^/]+"]


def test_grpc_route_refuses_http_only_filters() -> None:
    with pytest.raises(ValidationError, match="are not GRPCRoute filters"):
        parse_yaml(grpc_route("""  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]"""))
    with pytest.raises(ValidationError, match="not a gRPC method name"):
        parse_yaml(grpc_route("""  - matches: [{method: {method: a.b}}]"""))


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: default-routes, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: catalog}]
"""


def test_a_backend_in_another_namespace_needs_a_reference_grant() -> None:
    cross = route("  - backendRefs: [{name: catalog, namespace: shop, port: 80}]")
    m = without_fixture_vs(mesh(cross))
    [r] = reviews_vhost(m).routes
    assert r.direct_response.status == 500  # not permitted: the spec's 500
    assert any(f.code == "backend-not-permitted" for f in analyze(m.resources))
    m = without_fixture_vs(mesh(cross, GRANT))
    [r] = reviews_vhost(m).routes
    assert r.route.cluster == "outbound|80||catalog.shop.svc.cluster.local"
    other = GRANT.replace("kind: HTTPRoute", "kind: GRPCRoute")  # grants another kind
    m = without_fixture_vs(mesh(cross, other))
    assert reviews_vhost(m).routes[0].direct_response.status == 500


def test_reference_grants_for_other_kinds_are_stored_and_grant_nothing() -> None:
    """docs/adr/0040: a grant from Gateways or to Secrets is stored (not refused); it lets
    no route use the Service. Malformed kinds are still refused."""
    cross = route("  - backendRefs: [{name: catalog, namespace: shop, port: 80}]")
    for other in (GRANT.replace("kind: HTTPRoute", "kind: Gateway"),
                  GRANT.replace("kind: Service, name: catalog", "kind: Secret, name: catalog")):
        m = without_fixture_vs(mesh(cross, other))
        assert reviews_vhost(m).routes[0].direct_response.status == 500
    with pytest.raises(ValidationError, match="is not a kind"):
        parse_yaml(GRANT.replace("kind: HTTPRoute", "kind: 'HTTP Route'"))


def test_route_status_conditions_with_the_specs_reasons() -> None:
    from shoal.registry.gamma import route_status

    def status(m: MeshSnapshot, name: str = "reviews", kind: str = "HTTPRoute") -> dict:
        r = next(x for x in m.of_kind(kind) if x.metadata.name == name)
        out = route_status(m, r)
        assert out is not None
        [parent] = out["parents"]
        assert parent["controllerName"] == "shoal.io/mesh"
        return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}

    ok = route("  - backendRefs: [{name: reviews-v1, port: 9080}]")
    assert status(without_fixture_vs(mesh(ok))) == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    assert status(mesh(ok))["Accepted"] == ("False", "ShadowedByVirtualService")
    missing = route("  - backendRefs: [{name: nope, port: 9080}]")
    assert status(without_fixture_vs(mesh(missing)))["ResolvedRefs"] == (
        "False", "BackendNotFound")
    cross = route("  - backendRefs: [{name: catalog, namespace: shop, port: 80}]")
    assert status(without_fixture_vs(mesh(cross)))["ResolvedRefs"] == (
        "False", "RefNotPermitted")
    orphan = route("  - backendRefs: [{name: reviews-v1, port: 9080}]", parent="nothing")
    assert status(mesh(orphan))["Accepted"] == ("False", "NoMatchingParent")
    # a version the snapshot does not hold yet: no status rather than a wrong one
    m = without_fixture_vs(mesh(ok))
    r = next(x for x in m.of_kind("HTTPRoute"))
    assert route_status(m, r.with_revision(r.revision + 1)) is None


def test_a_route_on_one_port_leaves_the_others_alone() -> None:
    two_ports = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: multi}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: http-alt, port: 8080}]
"""
    m = mesh(two_ports, route("  - backendRefs: [{name: reviews-v1, port: 9080}]",
                              parent="multi"))
    [vs] = [r for r in m.of_kind("VirtualService") if r.metadata.name == "httproutes.multi"]
    [routed, default] = vs.spec.http
    assert routed.match[0].port == 9080
    assert default.match[0].port == 8080
    assert default.route[0].destination.host == "multi.default.svc.cluster.local"


_TOKEN = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True)
_PATH = st.from_regex(r"(/[a-zA-Z0-9_.~-]{1,8}){0,3}/?", fullmatch=True).map(
    lambda p: p if p.startswith("/") else "/" + p)
_MODIFIER = st.fixed_dictionaries({
    "set": st.lists(st.fixed_dictionaries({"name": _TOKEN, "value": st.text(max_size=8)}),
                    max_size=2, unique_by=lambda h: h["name"].lower()),
    "remove": st.lists(_TOKEN, max_size=2, unique_by=str.lower)})
_MATCH = st.fixed_dictionaries({
    "path": st.fixed_dictionaries({"type": st.sampled_from(["Exact", "PathPrefix"]),
                                   "value": _PATH}),
    "headers": st.lists(st.fixed_dictionaries({"name": _TOKEN, "value": st.text(max_size=8)}),
                        max_size=2, unique_by=lambda h: h["name"].lower()),
    "method": st.sampled_from(["GET", "POST"])})
_RULE = st.fixed_dictionaries({
    "matches": st.lists(_MATCH, min_size=1, max_size=2),
    "filters": st.lists(st.sampled_from(["RequestHeaderModifier", "ResponseHeaderModifier"]),
                        max_size=2, unique=True).flatmap(lambda kinds: st.tuples(
                            *[_MODIFIER.map(lambda m, k=k: {
                                "type": k, k[0].lower() + k[1:]: m}) for k in kinds])
                        ).map(list),
    "backendRefs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["reviews-v1", "reviews-v2", "nope"]),
        "port": st.just(9080), "weight": st.integers(0, 1000)}), max_size=3),
    "timeouts": st.fixed_dictionaries({"request": st.sampled_from(["0s", "10s", "1m30s"])})})


@settings(max_examples=150, deadline=None)
@given(st.lists(_RULE, min_size=1, max_size=3))
def test_any_accepted_route_translates(rules: list[dict]) -> None:
    """Whatever HTTPRoute the API accepts turns into a valid VirtualService (a failure
    here once stopped a control plane: mixed-case header names)."""
    import yaml

    from shoal.registry.gamma import check_translation

    doc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "r"}, "spec": {
               "parentRefs": [{"group": "", "kind": "Service", "name": "reviews",
                               "port": 9080}], "rules": rules}}
    try:
        [r] = parse_yaml(yaml.safe_dump(doc))
    except ValidationError:
        return
    assert check_translation(r) == []
    m = without_fixture_vs(mesh(yaml.safe_dump(doc)))
    assert any(v.metadata.name == "httproutes.reviews" for v in m.of_kind("VirtualService"))


def test_backend_filters_become_per_destination_headers() -> None:
    m = without_fixture_vs(mesh(route("""  - backendRefs:
    - name: reviews-v1
      port: 9080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Backend, value: v1}]}
    - {name: reviews-v2, port: 9080}""")))
    [r] = reviews_vhost(m).routes
    by_cluster = {c.name: c for c in r.route.weighted_clusters.clusters}
    v1 = by_cluster["outbound|9080||reviews-v1.default.svc.cluster.local"]
    assert [h.header.key for h in v1.request_headers_to_add] == ["x-backend"]
    assert not by_cluster["outbound|9080||reviews-v2.default.svc.cluster.local"
                          ].request_headers_to_add
    with pytest.raises(ValidationError, match="on a backend are not supported"):
        parse_yaml(route("""  - backendRefs:
    - name: reviews-v1
      port: 9080
      filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]"""))


def test_istio_source_namespace_on_a_virtual_service() -> None:
    """Istio's match.sourceNamespace, which consumer routes are built on: the rule exists
    only in the sidecars of that namespace."""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details-from-shop}
spec:
  hosts: [details]
  http:
  - match: [{sourceNamespace: shop}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: details}}]
  - route: [{destination: {host: details}}]
"""
    m = load_mesh(vs)

    def first(node: str) -> rc_pb2.Route:
        snap = generate(GenerationContext(m), GOLDEN_PROXIES[node])
        rc = outbound_table(snap)
        return next(v for v in rc.virtual_hosts
                    if v.name == "details.default.svc.cluster.local:9080").routes[0]

    assert first("catalog-1.shop").name == "default/details-from-shop.http[0]"
    assert first("productpage-v1.default").name == "default/details-from-shop.http[1]"
    with pytest.raises(ValidationError, match="must be a namespace name"):
        parse_yaml(vs.replace("sourceNamespace: shop", "sourceNamespace: Not_A_NS"))
