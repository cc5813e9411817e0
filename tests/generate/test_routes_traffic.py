"""VirtualService HTTP features and DestinationRule traffic policy -> Envoy config, and
Envoy accepts it (with the fault/CORS filters and the traffic policies wired in here the
way the lead wires them into the context)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import (
    GenerationContext,
    generate,
    listeners,
    outbound,
    route_filters,
    routes,
    vhosts,
)
from shoal.xds.generate.traffic_policy import apply_traffic_policy, policy_for
from shoal.xds.types import CLUSTER, LISTENER, ROUTE, ProxySnapshot, Resources

from .conftest import load_mesh, proxy
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - match: [{uri: {prefix: /api}, sourceLabels: {app: productpage}}]
    rewrite: {uri: /v2, authority: details.internal}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,503,unavailable"}
    fault:
      delay: {fixedDelay: 7s, percentage: {value: 12.5}}
      abort: {httpStatus: 418, percentage: {value: 50}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.b\\\\.example"}]
      allowMethods: [GET, POST]
      maxAge: 24h
      allowCredentials: true
    headers: {request: {set: {x-a: "1"}, remove: [x-b]}, response: {add: {x-c: "2"}}}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
      headers: {request: {set: {x-dest: v1}}}
    - destination: {host: reviews, subset: v2}
      weight: 20
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: details.default, port: 8080, scheme: https,
               redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - retries: {attempts: 0}
    route: [{destination: {host: details}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 60s, path: /}}}
    connectionPool:
      tcp: {maxConnections: 7, connectTimeout: 1s, tcpKeepalive: {time: 60s, probes: 3}}
      http: {http1MaxPendingRequests: 3, http2MaxRequests: 9, maxRetries: 2,
             idleTimeout: 30s, maxRequestsPerConnection: 10}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 15s,
                       maxEjectionPercent: 50}
    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {consecutiveGatewayErrors: 3}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: DISABLE}}
  - {name: v3, labels: {version: v3}}
"""


def mesh_with(extra: str) -> MeshSnapshot:
    text = (Path(__file__).parent / "mesh.yaml").read_text()
    docs = [d for d in text.split("\n---\n")
            if "kind: DestinationRule\nmetadata: {name: reviews}" not in d]
    return MeshSnapshot.build(parse_yaml("\n---\n".join(docs) + "\n---\n" + extra), 9)


@pytest.fixture(scope="module")
def tmesh() -> MeshSnapshot:
    return mesh_with(VS)


def details_routes(mesh: MeshSnapshot, labels: dict[str, str]) -> list[rc_pb2.Route]:
    svc = mesh.service("default", "details")
    return routes.service_routes(mesh, svc, svc.spec.ports[0], labels)


def test_http_rule_features(tmesh: MeshSnapshot) -> None:
    r = details_routes(tmesh, {"app": "productpage"})[0]
    a = r.route
    assert a.prefix_rewrite == "/v2" and a.host_rewrite_literal == "details.internal"
    assert a.retry_policy.num_retries.value == 3
    assert a.retry_policy.retry_on == "gateway-error,unavailable,retriable-status-codes"
    assert list(a.retry_policy.retriable_status_codes) == [503]
    assert a.retry_policy.per_try_timeout.seconds == 2
    [v1, v2] = a.weighted_clusters.clusters
    assert (v1.weight.value, v2.weight.value) == (80, 20)
    assert v1.request_headers_to_add[0].header.key == "x-dest"
    assert [m.runtime_fraction.default_value.numerator for m in a.request_mirror_policies] \
        == [250_000]
    assert a.request_mirror_policies[0].cluster.startswith("outbound|9080||ratings.")
    assert a.hash_policy[0].cookie.name == "user" and a.hash_policy[0].cookie.ttl.seconds == 60
    assert [h.header.key for h in r.request_headers_to_add] == ["x-a"]
    assert list(r.request_headers_to_remove) == ["x-b"]
    assert r.response_headers_to_add[0].append_action == 0  # APPEND_IF_EXISTS_OR_ADD
    fault = fault_pb2.HTTPFault()
    r.typed_per_filter_config[route_filters.FAULT_FILTER].Unpack(fault)
    assert fault.delay.fixed_delay.seconds == 7 and fault.delay.percentage.numerator == 125_000
    assert fault.abort.http_status == 418 and fault.abort.percentage.numerator == 500_000
    assert route_filters.CORS_FILTER in r.typed_per_filter_config


def test_redirect_direct_response_and_no_retries(tmesh: MeshSnapshot) -> None:
    rs = details_routes(tmesh, {})
    assert len(rs) == 3  # the sourceLabels rule is not generated for this proxy
    redirect, direct, last = rs
    assert redirect.redirect.path_redirect == "/new"
    assert redirect.redirect.port_redirect == 8080 and redirect.redirect.scheme_redirect == "https"
    assert redirect.redirect.response_code == rc_pb2.RedirectAction.PERMANENT_REDIRECT
    assert direct.direct_response.status == 418
    assert direct.direct_response.body.inline_string == "short and stout"
    assert not last.route.HasField("retry_policy")


def test_source_label_keys_key_the_route_memo(tmesh: MeshSnapshot) -> None:
    assert routes.source_label_keys(tmesh) == {"app"}
    wl = tmesh.workload("default", "reviews-v2")
    assert routes.route_labels(routes.source_label_keys(tmesh), wl) == (("app", "reviews"),)
    assert routes.route_labels(routes.source_label_keys(load_mesh()), wl) == ()  # no sourceLabels


def test_traffic_policy_per_subset_and_port(tmesh: MeshSnapshot) -> None:
    ctx = GenerationContext(tmesh)
    dr = tmesh.destination_rule_for(tmesh.service("default", "reviews"))
    name = "outbound|9080|v1|reviews.default.svc.cluster.local"
    c = outbound.table(ctx).clusters[name]  # the context applies the DestinationRule's policy
    assert c.lb_policy == cluster_pb2.Cluster.RING_HASH
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value,
            t.max_retries.value) == (7, 3, 9, 2)
    assert c.connect_timeout.seconds == 1
    assert c.upstream_connection_options.tcp_keepalive.keepalive_probes.value == 3
    # portLevelSettings replace the whole outlierDetection of the top level (Istio)
    assert c.outlier_detection.consecutive_gateway_failure.value == 3
    assert not c.outlier_detection.HasField("consecutive_5xx")
    assert c.common_lb_config.healthy_panic_threshold.value == 0
    v2 = outbound.table(ctx).clusters[name.replace("|v1|", "|v2|")]
    assert v2.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert len(v2.transport_socket_matches) == 0  # tls DISABLE
    assert apply_traffic_policy(c, None, 9080) is c
    assert policy_for(dr, "v1", 9080) is not None


@pytest.mark.parametrize("field, error", [
    ("trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}", "PASSTHROUGH"),
    ("trafficPolicy: {tls: {mode: MUTUAL}}", "mode MUTUAL needs clientCertificate"),
    ("trafficPolicy: {loadBalancer: {localityLbSetting: {failoverPriority: ['a b']}}}",
     "expected a label key"),
    ("trafficPolicy: {loadBalancer: {consistentHash: {}}}", "exactly one of"),
])
def test_destination_rule_rejections(field: str, error: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_yaml("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                   f"metadata: {{name: r}}\nspec:\n  host: reviews\n  {field}\n")
    assert error in str(e.value)


@pytest.mark.parametrize("rule, error", [
    ("{redirect: {uri: /x}, route: [{destination: {host: a}}]}", "exactly one of route"),
    ("{fault: {delay: {percentage: {value: 5}}}, route: [{destination: {host: a}}]}",
     "fixedDelay is required"),
    ("{retries: {retryOn: 'bogus'}, route: [{destination: {host: a}}]}", "unknown retry"),
    ("{redirect: {uri: /x, redirectCode: 300}}", "must be one of"),
    ("{fault: {abort: {grpcStatus: NOPE}}, route: [{destination: {host: a}}]}", "gRPC"),
    ("{match: [{gateways: [My_GW]}], route: [{destination: {host: a}}]}", "mesh"),
])
def test_virtual_service_rejections(rule: str, error: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_yaml("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                   f"metadata: {{name: r}}\nspec:\n  hosts: [a]\n  http: [{rule}]\n")
    assert error in str(e.value)


def wired(ctx: GenerationContext, snap: ProxySnapshot, port: int) -> ProxySnapshot:
    """The snapshot as it will be once the lead's wiring lands (see docs/traffic.md)."""
    mesh = ctx.mesh
    cds = dict(snap.get(CLUSTER).items)
    for service in mesh.services:
        dr = mesh.destination_rule_for(service)
        for p in service.spec.ports:
            for subset in [None, *(s.name for s in (dr.spec.subsets if dr else []))]:
                name = f"outbound|{p.port}|{subset or ''}|{mesh.fqdn(service)}"
                cds[name] = apply_traffic_policy(cds[name], policy_for(dr, subset, p.port),
                                                 p.port)
    rds = dict(snap.get(ROUTE).items)
    labels = {"app": "productpage"}  # this proxy's: the sourceLabels rule applies
    rds["outbound_http"] = vhosts.outbound_route_config(
        mesh, "default", lambda s, p: routes.service_routes(mesh, s, p, labels))
    lds = dict(snap.get(LISTENER).items)
    lds["outbound_http"] = listeners.outbound_http_listener(port, route_filters.TRAFFIC_EXTRAS)
    return ProxySnapshot(resources={**snap.resources, CLUSTER: Resources(cds, "x"),
                                    LISTENER: Resources(lds, "x"),
                                    ROUTE: Resources(rds, "x")})


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_traffic_features(tmesh: MeshSnapshot, tmp_path: Path) -> None:
    ctx = GenerationContext(tmesh)
    p = proxy("productpage-v1", app_ports={"http": 9080})
    snap = wired(ctx, generate(ctx, p), 15001)
    boot = static_bootstrap(snap, p.node_id)
    assert "envoy.filters.http.fault" in str(boot)
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "OK" in res.stdout
