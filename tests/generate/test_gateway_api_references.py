"""References a route or Gateway cannot use are stored and reported, not refused
(docs/adr/0040): a backend of another kind than Service (``ResolvedRefs: InvalidKind``),
ReferenceGrants that do not match (``RefNotPermitted``), each backend's requests answered
500; a Gateway's certificate in another namespace, used when a ReferenceGrant there
allows it. The Gateway API's own conformance files are read from ../shared as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.analyze import analyze
from shoal.api import parse_yaml
from shoal.api.meta import Resource
from shoal.errors import ValidationError
from shoal.registry import gamma, gateways
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import LISTENER, ROUTE, Proxy, ProxyMetadata

from .test_gateway_api_gateways import EDGE, MESH

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "gateway-api-conformance" \
    / "conformance"
INFRA = "gateway-conformance-infra"
BACKENDS = ((INFRA, "infra-backend-v1"), ("gateway-conformance-web-backend", "web-backend"),
            ("gateway-conformance-app-backend", "app-backend-v1"),
            ("gateway-conformance-app-backend", "app-backend-v2"))
GATEWAY = Proxy(node_id=f"gw-1.{INFRA}", namespace=INFRA,
                metadata=ProxyMetadata(workload="gw-1", outbound_port=0))


def suite_file(name: str) -> str:
    path = CONFORMANCE / name
    if not path.is_file():
        pytest.skip(f"no conformance suite at {CONFORMANCE}")
    return path.read_text()


def base() -> list[dict[str, Any]]:
    """The suite's namespaces and its same-namespace Gateway (class: shoal), its backends
    as shoal Services and a gateway workload that serves the Gateway on port 80."""
    docs = [d for d in yaml.safe_load_all(suite_file("base/manifests.yaml")) if d]
    kept = [d for d in docs if d["kind"] == "Namespace"
            or (d["kind"] == "Gateway" and d["metadata"]["name"] == "same-namespace")]
    for d in kept:
        if d["kind"] == "Gateway":
            d["spec"]["gatewayClassName"] = "shoal"  # the suite's placeholder
    kept += [{"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
              "metadata": {"name": name, "namespace": ns},
              "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]}}
             for ns, name in BACKENDS]
    kept.append({"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
                 "metadata": {"name": "gw-1", "namespace": INFRA, "annotations": {
                     "networking.shoal.io/gateway": "same-namespace",
                     "networking.shoal.io/gateway-ports": "80"}},
                 "spec": {"address": "127.0.0.1", "ports": {},
                          "labels": {"gateway.networking.k8s.io/gateway-name":
                                     "same-namespace"}}})
    return kept


def conformance_mesh(*files: str, extra: list[Resource] | None = None) -> MeshSnapshot:
    resources = parse_yaml(yaml.safe_dump_all(base()))
    for f in files:
        resources += parse_yaml(suite_file(f"tests/{f}"), f)
    return MeshSnapshot.build(resources + (extra or []), 1)


def conditions(m: MeshSnapshot, name: str, namespace: str = INFRA,
               kind: str = "HTTPRoute") -> dict[str, dict[str, Any]]:
    route = next(r for r in m.of_kind(kind)
                 if (r.metadata.namespace, r.metadata.name) == (namespace, name))
    status = gamma.route_status(m, route)
    assert status is not None
    [parent] = status["parents"]
    return {c["type"]: c for c in parent["conditions"]}


def routes_of(m: MeshSnapshot, proxy: Proxy = GATEWAY, table: str = "gateway|80"
              ) -> dict[str, rc_pb2.Route]:
    rc = generate(GenerationContext(m), proxy).get(ROUTE).items[table]
    return {r.name: r for vh in rc.virtual_hosts for r in vh.routes}


def findings(m: MeshSnapshot) -> dict[tuple[str, str], str]:
    return {(f.code, f.path): f.message for f in analyze(m.resources)}


def test_a_backend_of_an_unknown_kind_is_stored_with_invalid_kind_and_answers_500() -> None:
    """httproute-invalid-backendref-unknown-kind.yaml: accepted on its Gateway,
    ResolvedRefs False (InvalidKind, the message naming the backend), its requests 500."""
    m = conformance_mesh("httproute-invalid-backendref-unknown-kind.yaml")
    c = conditions(m, "invalid-backend-ref-unknown-kind")
    assert (c["Accepted"]["status"], c["Accepted"]["reason"]) == ("True", "Accepted")
    assert (c["ResolvedRefs"]["status"], c["ResolvedRefs"]["reason"]) == ("False",
                                                                          "InvalidKind")
    assert c["ResolvedRefs"]["message"].startswith(
        "InvalidKind: backend unknownkind.example.com/NonExistent infra-backend-v1 is not "
        "a Service")
    [r] = routes_of(m).values()
    assert r.match.prefix == "/" and r.direct_response.status == 500
    # a Service of that name exists: the kind decides, not the name
    assert m.service(INFRA, "infra-backend-v1") is not None
    message = findings(m)[("backend-invalid-kind", "spec.rules[0].backendRefs[0]")]
    assert "is not a Service" in message


def test_grants_that_do_not_match_permit_nothing() -> None:
    """httproute-invalid-reference-grant.yaml: its seven grants (a wrong namespace, from
    group, from kind, from namespace, to group, to kind, to name) are stored and none lets
    the route use web-backend: RefNotPermitted and 500. The grant of
    httproute-reference-grant.yaml, which differs from them by one field each, does."""
    m = conformance_mesh("httproute-invalid-reference-grant.yaml")
    assert len(m.of_kind("ReferenceGrant")) == 7
    c = conditions(m, "reference-grant")
    assert c["Accepted"]["status"] == "True"
    assert (c["ResolvedRefs"]["status"], c["ResolvedRefs"]["reason"]) == (
        "False", "RefNotPermitted")
    assert "web-backend" in c["ResolvedRefs"]["message"]
    [r] = routes_of(m).values()
    assert r.direct_response.status == 500
    assert ("backend-not-permitted", "spec.rules[0].backendRefs[0]") in findings(m)

    [good] = [g for g in parse_yaml(suite_file("tests/httproute-reference-grant.yaml"))
              if g.kind == "ReferenceGrant"]
    m = conformance_mesh("httproute-invalid-reference-grant.yaml", extra=[good])
    assert conditions(m, "reference-grant")["ResolvedRefs"]["status"] == "True"
    [r] = routes_of(m).values()
    assert r.route.cluster == "outbound|8080||web-backend.gateway-conformance-web-backend." \
                              "svc.cluster.local"


def test_a_partially_granted_route_still_sends_to_its_granted_backend() -> None:
    """httproute-partially-invalid-via-invalid-reference-grant.yaml: the grant names
    app-backend-v1 only. /v2 (app-backend-v2, not granted) gets 500, the rest goes to
    app-backend-v1; the status says RefNotPermitted, naming app-backend-v2 only."""
    m = conformance_mesh("httproute-partially-invalid-via-invalid-reference-grant.yaml")
    c = conditions(m, "invalid-reference-grant")
    assert c["Accepted"]["status"] == "True"
    assert (c["ResolvedRefs"]["status"], c["ResolvedRefs"]["reason"]) == (
        "False", "RefNotPermitted")
    assert "app-backend-v2" in c["ResolvedRefs"]["message"]
    assert "app-backend-v1" not in c["ResolvedRefs"]["message"]
    routes = routes_of(m)
    v2, rest = (routes[f"{INFRA}.invalid-reference-grant.{i}.0"] for i in (0, 1))
    assert v2.direct_response.status == 500
    assert rest.match.prefix == "/"
    assert rest.route.cluster == "outbound|8080||app-backend-v1.gateway-conformance-app-" \
                                 "backend.svc.cluster.local"


def test_not_granted_is_said_before_whether_the_service_exists() -> None:
    """Another namespace's Service without a grant is RefNotPermitted whether it exists
    or not (a route's status does not tell what another namespace holds)."""
    text = suite_file("tests/httproute-partially-invalid-via-invalid-reference-grant.yaml")
    docs = [r for r in parse_yaml(text.replace("app-backend-v2", "no-such-backend"))
            if r.kind == "HTTPRoute"]
    m = MeshSnapshot.build(parse_yaml(yaml.safe_dump_all(base())) + docs, 1)
    resolved = conditions(m, "invalid-reference-grant")["ResolvedRefs"]
    assert resolved["reason"] == "RefNotPermitted", resolved


def test_the_status_names_every_backend_and_why() -> None:
    """One condition, the first problem's reason; the message names each backend with
    its reason."""
    route = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - {group: example.com, kind: UnknownKind, name: foo}
    - {name: nope, port: 8080}
    - {name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}
    - {name: infra-backend-v1, port: 8080}
"""
    m = MeshSnapshot.build(parse_yaml(yaml.safe_dump_all(base())) + parse_yaml(route), 1)
    resolved = conditions(m, "mixed")["ResolvedRefs"]
    assert resolved["reason"] == "InvalidKind"
    message = resolved["message"]
    assert "InvalidKind: backend example.com/UnknownKind foo is not a Service" in message
    assert f"BackendNotFound: no Service {INFRA}/nope" in message
    assert "RefNotPermitted: no ReferenceGrant in namespace gateway-conformance-web-backend" \
        in message
    assert "infra-backend-v1" not in message
    codes = {code for code, _ in findings(m)}
    assert {"backend-invalid-kind", "backend-not-found", "backend-not-permitted"} <= codes


MESH_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: %s
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - backendRefs: [{group: example.com, kind: UnknownKind, name: foo}]
"""


@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute"])
def test_a_mesh_route_to_an_unknown_kind_answers_500(kind: str) -> None:
    """The same on a Service parent (GAMMA), for both kinds of route."""
    base_ = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build(base_ + parse_yaml(MESH_ROUTE % kind), 2)
    [vs] = [v for v in m.of_kind("VirtualService") if v.metadata.name == "httproutes.web"]
    [rule] = vs.spec.http
    assert rule.direct_response is not None and rule.direct_response.status == 500
    c = conditions(m, "web-route", "shop", kind)
    assert (c["Accepted"]["status"], c["ResolvedRefs"]["reason"]) == ("True", "InvalidKind")


def test_a_mirror_to_an_unknown_kind_mirrors_nothing() -> None:
    route = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [web.example.com]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {group: example.com, kind: Recorder, name: tape}}
    backendRefs: [{name: web, port: 8080}]
"""
    base_ = [r for r in parse_yaml(MESH) if r.kind != "HTTPRoute"]
    m = MeshSnapshot.build(base_ + parse_yaml(route), 2)
    r = routes_of(m, EDGE, "gateway|8080")["shop.web.0.0"]
    assert r.route.cluster == "outbound|8080||web.shop.svc.cluster.local"
    assert not r.route.request_mirror_policies
    assert conditions(m, "web", "shop")["ResolvedRefs"]["reason"] == "InvalidKind"
    message = findings(m)[("backend-invalid-kind",
                           "spec.rules[0].filters[0].requestMirror.backendRef")]
    assert "nothing is mirrored" in message


def test_a_tls_route_to_an_unknown_kind_takes_no_connections() -> None:
    docs = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: shoal
  listeners:
  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com",
     tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [web.example.com]
  rules: [{backendRefs: [{group: example.com, kind: Vault, name: web}]}]
"""
    base_ = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build(base_ + parse_yaml(docs), 2)
    assert not [v for v in m.of_kind("VirtualService") if v.spec.tls]
    c = conditions(m, "secure", "shop", "TLSRoute")
    assert (c["Accepted"]["status"], c["ResolvedRefs"]["reason"]) == ("True", "InvalidKind")


CERT_GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: certs-for-shop, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: %s, namespace: shop}]
  to: [{group: "", kind: Secret%s}]
"""


@pytest.mark.parametrize(("grant", "served"), [
    ("", False),
    (CERT_GRANT % ("Gateway", ""), True),  # every Secret of namespace certs
    (CERT_GRANT % ("Gateway", ", name: web-cert"), True),
    (CERT_GRANT % ("Gateway", ", name: other-cert"), False),
    (CERT_GRANT % ("HTTPRoute", ""), False),  # grants routes, not Gateways
    ((CERT_GRANT % ("Gateway", "")).replace("namespace: shop", "namespace: front"), False),
    ((CERT_GRANT % ("Gateway", "")).replace("namespace: certs", "namespace: other"), False),
    ((CERT_GRANT % ("Gateway", "")).replace("kind: Secret", "kind: ConfigMap"), False),
])
def test_a_certificate_in_another_namespace_is_used_when_a_grant_allows_it(
        grant: str, served: bool) -> None:
    """A Gateway's certificateRefs to a Secret of another namespace: the gateway's
    credential of that name, once a ReferenceGrant in that namespace lets Gateways of
    the Gateway's namespace use it; until then the listener is not served."""
    base_ = [r for r in parse_yaml(MESH) if r.kind != gateways.KIND]
    gw = MESH[MESH.index("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway"):]
    gw = gw[:gw.index("---")].replace("[{name: web-cert}]",
                                      "[{name: web-cert, namespace: certs}]")
    m = MeshSnapshot.build(base_ + parse_yaml(gw + ("---\n" + grant if grant else "")), 10)
    listeners = generate(GenerationContext(m), EDGE).get(LISTENER).items.values()
    assert (8443 in {lis.address.socket_address.port_value for lis in listeners}) is served
    (g,) = m.of_kind(gateways.KIND)
    status = gateways.gateway_status(m, g)
    assert status is not None
    https = next(lis for lis in status["listeners"] if lis["name"] == "https")
    resolved = next(c for c in https["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == (
        ("True", "ResolvedRefs") if served else ("False", "RefNotPermitted"))
    assert (https["attachedRoutes"] == 1) is served  # a route attaches to a served one
    codes = {code for code, _ in findings(m)}
    assert ("certificate-not-permitted" not in codes) is served
    if served:  # the gateway's own credential named web-cert terminates it
        [server] = next(i for i in m.of_kind("Gateway")
                        if i.metadata.name == "gatewayapi.edge.https").spec.servers
        assert server.tls is not None and server.tls.credential_name == "web-cert"


_GROUP = st.sampled_from(["", "core", "example.com", "gateway.networking.k8s.io",
                          "multicluster.x-k8s.io", "Example.com", "a..b", "-x"])
_KIND = st.one_of(st.sampled_from(["Service", "ServiceImport", "Backend", "service"]),
                  st.from_regex(r"[A-Za-z0-9 _-]{0,8}", fullmatch=True))


@settings(max_examples=150, deadline=None)
@given(_GROUP, _KIND, st.booleans(), st.sampled_from(["HTTPRoute", "GRPCRoute"]))
def test_any_backend_kind_is_refused_for_its_shape_or_resolved(
        group: str, kind: str, port: bool, route_kind: str) -> None:
    """Random groups and kinds of backend: a ValidationError names the field, or the
    route is stored; then it translates, its status is InvalidKind exactly when the
    backend is not a Service, and a rule of such a backend answers 500."""
    ref: dict[str, Any] = {"group": group, "kind": kind, "name": "web"}
    if port:
        ref["port"] = 8080
    doc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": route_kind,
           "metadata": {"name": "r", "namespace": "shop"},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web",
                                    "port": 8080}],
                    "rules": [{"backendRefs": [ref]}]}}
    try:
        [route] = parse_yaml(yaml.safe_dump(doc))
    except ValidationError as e:
        assert all(v.path.startswith("spec.rules[0].backendRefs[0]")
                   for v in e.violations), e.violations
        return
    assert gamma.check_translation(route) == []
    base_ = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build([*base_, route], 3)
    service = group in ("", "core") and kind == "Service"
    resolved = conditions(m, "r", "shop", route_kind)["ResolvedRefs"]
    assert (resolved["reason"] == "InvalidKind") is not service
    assert resolved["status"] == ("True" if service else "False")
    [vs] = [v for v in m.of_kind("VirtualService") if v.metadata.name == "httproutes.web"]
    [rule] = vs.spec.http
    assert (rule.direct_response is not None) is not service
