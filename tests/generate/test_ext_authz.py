"""AuthorizationPolicy action CUSTOM -> Envoy ext_authz (docs/adr/0033): the filters and
their order, TCP ports, every way of failing closed, the provider's cluster kept in a
scoped proxy, and Envoy itself accepting the result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as net_ext_authz_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2

from shoal.analyze import analyze
from shoal.api.meshconfig import parse_mesh_config
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import CLUSTER, LISTENER, ProxySnapshot

from .conftest import GOLDEN_PROXIES, http_connection_managers, load_mesh
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap

PROVIDERS = parse_mesh_config("""
extensionProviders:
- name: http-authz
  envoyExtAuthzHttp:
    service: catalog.shop.svc.cluster.local
    port: 80
    timeout: 250ms
    pathPrefix: /check
    statusOnError: "503"
    includeRequestHeadersInCheck: [x-ext-authz, "x-user-*"]
    includeAdditionalHeadersInCheck: {x-from-mesh: shoal}
    headersToUpstreamOnAllow: [x-ext-authz-check-result]
    headersToDownstreamOnDeny: ["*-check-result"]
    includeRequestBodyInCheck: {maxRequestBytes: 4096, allowPartialMessage: true}
- name: grpc-authz
  envoyExtAuthzGrpc:
    service: catalog.shop.svc.cluster.local
    port: 50051
    failOpen: true
- name: no-such-port
  envoyExtAuthzGrpc: {service: catalog.shop.svc.cluster.local, port: 1}
- name: no-such-service
  envoyExtAuthzGrpc: {service: nowhere.example.com, port: 9000}
""").extension_providers


def custom(name: str, app: str, provider: str, rules: str = "[{to: [{operation: "
           "{paths: ['/admin*']}}]}]") -> str:
    return f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: {rules}
"""


def mesh_with(*docs: str) -> MeshSnapshot:
    m = load_mesh("\n---\n".join(docs))
    return replace(m, config=replace(m.config, extension_providers=PROVIDERS))


def snap(m: MeshSnapshot, node_id: str) -> ProxySnapshot:
    return generate(GenerationContext(m), GOLDEN_PROXIES[node_id])


def inbound_http_filters(s: ProxySnapshot) -> list:
    """The inbound HCM's filters after JWT authentication (its mTLS and plaintext chains
    have the same ones)."""
    chains = [list(h.http_filters) for h in http_connection_managers(s)
              if h.stat_prefix.startswith("inbound_")]
    assert chains and all(c == chains[0] for c in chains)
    return [f for f in chains[0] if f.name != "envoy.filters.http.jwt_authn"]


def network_filters(s: ProxySnapshot, prefix: str = "inbound|") -> list:
    [lis] = [v for k, v in s.get(LISTENER).items.items() if k.startswith(prefix)]
    return list(lis.filter_chains[0].filters)


def test_http_provider_shadow_rbac_then_ext_authz_before_deny_and_allow() -> None:
    m = mesh_with(custom("ext", "productpage", "http-authz"), """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
""")
    filters = inbound_http_filters(snap(m, "productpage-v1.default"))
    assert [f.name for f in filters][:3] == [
        "envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "envoy.filters.http.rbac"]
    shadow = http_rbac_pb2.RBAC()
    assert filters[0].typed_config.Unpack(shadow)
    assert not shadow.HasField("rules")  # marks, never enforces
    assert list(shadow.shadow_rules.policies) == [
        "ext-authz-ns[default]-policy[ext]-rule[0]"]
    check = ext_authz_pb2.ExtAuthz()
    assert filters[1].typed_config.Unpack(check)
    assert check.filter_enabled_metadata.path[0].key == "ext_authz_shadow_effective_policy_id"
    assert check.filter_enabled_metadata.value.string_match.prefix == "ext-authz-"
    svc = check.http_service
    assert svc.server_uri.cluster == "outbound|80||catalog.shop.svc.cluster.local"
    assert svc.server_uri.timeout.ToMilliseconds() == 250
    assert svc.path_prefix == "/check"
    assert [(p.exact, p.prefix) for p in check.allowed_headers.patterns] == [
        ("x-ext-authz", ""), ("", "x-user-")]
    assert [p.suffix for p in svc.authorization_response.allowed_client_headers.patterns] == [
        "-check-result"]
    assert not svc.authorization_response.HasField("allowed_client_headers_on_success")
    assert [(h.key, h.value) for h in svc.authorization_request.headers_to_add] == [
        ("x-from-mesh", "shoal")]
    assert check.status_on_error.code == 503 and not check.failure_mode_allow
    assert check.with_request_body.max_request_bytes == 4096


def test_grpc_provider() -> None:
    m = mesh_with(custom("ext", "productpage", "grpc-authz"))
    check = ext_authz_pb2.ExtAuthz()
    assert inbound_http_filters(snap(m, "productpage-v1.default"))[1].typed_config.Unpack(check)
    assert check.grpc_service.envoy_grpc.cluster_name == (
        "outbound|50051||catalog.shop.svc.cluster.local")
    assert check.failure_mode_allow  # failOpen
    assert check.status_on_error.code == 403  # Istio's default
    assert check.grpc_service.timeout.seconds == 600  # Istio's default, 10m


@pytest.mark.parametrize(("provider", "why"), [
    ("unknown", "not in the mesh config's extensionProviders"),
    ("no-such-port", "has no port 1"),
    ("no-such-service", "neither a mesh service nor a ServiceEntry host"),
])
def test_a_provider_that_cannot_be_used_fails_closed(provider: str, why: str) -> None:
    m = mesh_with(custom("ext", "productpage", provider))
    filters = inbound_http_filters(snap(m, "productpage-v1.default"))
    assert "envoy.filters.http.ext_authz" not in [f.name for f in filters]
    deny = http_rbac_pb2.RBAC()
    assert filters[0].typed_config.Unpack(deny)
    assert deny.rules.action == rbac_pb2.RBAC.DENY  # enforced: the selected requests get 403
    assert list(deny.rules.policies) == ["ns[default]-policy[ext]-rule[0]"]
    [finding] = [f for f in analyze(m.resources, config=m.config)
                 if f.code == "provider-unavailable"]
    assert why in finding.message and finding.path == "spec.provider.name"


def test_two_providers_for_one_workload_fail_closed() -> None:
    m = mesh_with(custom("a", "productpage", "http-authz"),
                  custom("b", "productpage", "grpc-authz"))
    filters = inbound_http_filters(snap(m, "productpage-v1.default"))
    assert "envoy.filters.http.ext_authz" not in [f.name for f in filters]
    deny = http_rbac_pb2.RBAC()
    assert filters[0].typed_config.Unpack(deny)
    assert set(deny.rules.policies) == {"ns[default]-policy[a]-rule[0]",
                                        "ns[default]-policy[b]-rule[0]"}


def test_tcp_port_grpc_provider_checks_connections_http_provider_closes_them() -> None:
    everything = "[{}]"
    m = mesh_with(custom("ext", "mongodb", "grpc-authz", everything))
    names = [f.name for f in network_filters(snap(m, "mongodb-v1.default"))]
    assert names[:2] == ["envoy.filters.network.rbac", "envoy.filters.network.ext_authz"]
    assert names[-1] == "envoy.filters.network.tcp_proxy"  # the fixture's own RBAC between
    check = net_ext_authz_pb2.ExtAuthz()
    assert network_filters(snap(m, "mongodb-v1.default"))[1].typed_config.Unpack(check)
    assert check.filter_enabled_metadata.filter == "envoy.filters.network.rbac"
    m = mesh_with(custom("ext", "mongodb", "http-authz", everything))
    deny_filter = network_filters(snap(m, "mongodb-v1.default"))[0]
    deny = net_rbac_pb2.RBAC()
    assert deny_filter.typed_config.Unpack(deny) and deny.rules.action == rbac_pb2.RBAC.DENY


def test_http_only_fields_on_tcp_check_more_not_less() -> None:
    """A CUSTOM rule about paths on a TCP port loses the path and sends every connection
    to the authorizer, like a DENY rule denies more: never a way around the check."""
    m = mesh_with(custom("ext", "mongodb", "grpc-authz"))
    shadow = net_rbac_pb2.RBAC()
    assert network_filters(snap(m, "mongodb-v1.default"))[0].typed_config.Unpack(shadow)
    [rule] = shadow.shadow_rules.policies.values()
    assert rule.permissions[0].any  # no condition left: every connection is checked


def test_the_providers_cluster_survives_sidecar_scoping() -> None:
    scoped = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
"""
    m = mesh_with(custom("ext", "productpage", "grpc-authz"), scoped)
    clusters = snap(m, "productpage-v1.default").get(CLUSTER).items
    assert "outbound|50051||catalog.shop.svc.cluster.local" in clusters
    assert "outbound|80||catalog.shop.svc.cluster.local" not in clusters  # scoped out


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize(("node_id", "app", "provider"), [
    ("productpage-v1.default", "productpage", "http-authz"),
    ("productpage-v1.default", "productpage", "grpc-authz"),
    ("mongodb-v1.default", "mongodb", "grpc-authz"),
])
def test_envoy_accepts(node_id: str, app: str, provider: str, tmp_path: Path) -> None:
    m = mesh_with(custom("ext", app, provider))
    res = envoy_validate(static_bootstrap(snap(m, node_id), node_id),
                         tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
