"""Gateway API Gateways and the HTTPRoutes attached to them (issue 15, ADR 0039): kinds
told apart by API group, listeners and hostnames, allowedRoutes, status, and the config
a gateway proxy gets (validated by the bundled Envoy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.route.v3 import route_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api import parse_yaml, resolve_kind
from shoal.api.gatewayapi import Listener
from shoal.errors import ValidationError
from shoal.registry import gamma, gateways
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import LISTENER, ROUTE, Proxy, ProxyMetadata

from .envoy_check import envoy_binary, envoy_validate, static_bootstrap

MESH = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {selector: {app: web, version: v2}, ports: [{name: http, port: 8080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: web, version: v2}, ports: {http: 18080}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata:
  name: edge-1
  namespace: shop
  annotations: {networking.shoal.io/gateway: edge, networking.shoal.io/gateway-ports: "8080,8443",
                networking.shoal.io/gateway-credentials: web-cert}
spec:
  address: 127.0.0.1
  labels: {app: edge, gateway.networking.k8s.io/gateway-name: edge}
  ports: {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: shoal
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: "*.example.com",
     allowedRoutes: {namespaces: {from: All}}}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: web.example.com
    tls: {certificateRefs: [{name: web-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [web.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 8080}]
  - backendRefs: [{name: web, port: 8080}]
"""
EDGE = Proxy(node_id="edge-1.shop", namespace="shop",
             metadata=ProxyMetadata(workload="edge-1", outbound_port=0))


def mesh(extra: str = "") -> MeshSnapshot:
    return MeshSnapshot.build(parse_yaml(MESH + (f"\n---\n{extra}" if extra else "")), 3)


def domains(rc: route_pb2.RouteConfiguration) -> dict[str, list[str]]:
    return {d: [r.name for r in vh.routes] for vh in rc.virtual_hosts for d in vh.domains}


def test_gateway_is_told_apart_from_istios_by_its_api_group() -> None:
    m = mesh()
    (gw,) = m.of_kind(gateways.KIND)
    assert gw.kind == "Gateway.gateway.networking.k8s.io"
    assert gw.dump()["kind"] == "Gateway"
    assert gw.dump()["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert resolve_kind("gateways.gateway.networking.k8s.io").name == gw.kind
    assert resolve_kind("gtw").name == gw.kind
    assert resolve_kind("gateway").name == "Gateway"  # Istio's keeps the plain name
    assert resolve_kind("gateways.networking.istio.io").name == "Gateway"
    # its listeners stand as Istio Gateways (one per listener), selecting its workloads
    istio = sorted(g.metadata.name for g in m.of_kind("Gateway"))
    assert istio == ["gatewayapi.edge.http", "gatewayapi.edge.https"]


def test_a_gateway_proxy_gets_its_listeners_and_the_routes_attached() -> None:
    snap = generate(GenerationContext(mesh()), EDGE)
    ports = sorted(lis.address.socket_address.port_value
                   for lis in snap.get(LISTENER).items.values())
    assert ports == [8080, 8443]
    routes = snap.get(ROUTE).items
    http = domains(routes["gateway|8080"])
    # the route's hostname within the listener's wildcard; its rules in order
    assert http["web.example.com"] == ["shop.web.0.0", "shop.web.1.0"]
    assert "*.example.com" not in http  # nothing else is routed there
    # HTTPS: the listener's own table (its SNI); any other Host over it is misdirected
    https = domains(routes["gateway|8443|web.example.com"])
    assert https["web.example.com"] == ["shop.web.0.0", "shop.web.1.0"]
    [misdirected] = [v for v in routes["gateway|8443|web.example.com"].virtual_hosts
                     if "*" in v.domains]
    assert misdirected.routes[0].direct_response.status == 421


@pytest.mark.skipif(envoy_binary() is None, reason="needs the envoy binary")
def test_envoy_accepts_the_gateway_config(tmp_path: Path) -> None:
    from tests.traffic.test_gateway_live import make_cert

    snap = generate(GenerationContext(mesh()), EDGE)
    boot = static_bootstrap(snap, "edge-1.shop")
    cert, key = make_cert(tmp_path)  # the gateway's credential web-cert (static secret)
    secret = boot.static_resources.secrets.add(name="web-cert")
    secret.tls_certificate.certificate_chain.filename = str(cert)
    secret.tls_certificate.private_key.filename = str(key)
    result = envoy_validate(boot, tmp_path / "boot.json")
    assert result.returncode == 0, result.stdout + result.stderr


ELSEWHERE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: front}
spec:
  parentRefs: [{name: edge, namespace: shop, sectionName: %s}]
  hostnames: [%s]
  rules: [{backendRefs: [{name: web, namespace: shop, port: 8080}]}]
"""


def test_status_of_routes_the_listeners_do_not_take() -> None:
    grant = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: front, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}]
  to: [{group: "", kind: Service}]
"""
    cases = {("https", "web.example.com"): "NotAllowedByListeners",  # from: Same
             ("http", "web.example.org"): "NoMatchingListenerHostname",
             ("nope", "web.example.com"): "NoMatchingParent",
             ("http", "api.example.com"): "Accepted"}
    for (section, host), reason in cases.items():
        m = mesh(ELSEWHERE % (section, host) + "---\n" + grant)
        (route,) = [r for r in m.of_kind("HTTPRoute") if r.metadata.namespace == "front"]
        status = gamma.route_status(m, route)
        assert status is not None
        (parent,) = status["parents"]
        accepted = next(c for c in parent["conditions"] if c["type"] == "Accepted")
        assert accepted["reason"] == reason, (section, host, accepted)
        routed = domains(generate(GenerationContext(m), EDGE).get(ROUTE).items
                         ["gateway|8080"])
        assert ("api.example.com" in routed) is (reason == "Accepted")


def test_gateway_status_says_who_serves_it() -> None:
    m = mesh()
    (gw,) = m.of_kind(gateways.KIND)
    status = gateways.gateway_status(m, gw)
    assert status is not None
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True", "Programmed": "True"}
    assert [(lis["name"], lis["attachedRoutes"]) for lis in status["listeners"]] == [
        ("http", 1), ("https", 1)]
    # no gateway workload: accepted, not programmed, and the message says what to run
    bare = MeshSnapshot.build([r for r in m.resources if r.metadata.name != "edge-1"], 4)
    (gw,) = bare.of_kind(gateways.KIND)
    status = gateways.gateway_status(bare, gw)
    assert status is not None
    programmed = status["conditions"][1]
    assert programmed["status"] == "False" and "shoal gateway run --name edge" in \
        programmed["message"]


def test_a_gateway_of_another_class_is_not_served_and_says_so() -> None:
    m = mesh().resources
    other = [r if r.kind != gateways.KIND else r.model_copy(update={
        "spec": r.spec.model_copy(update={"gateway_class_name": "nginx"})}) for r in m]
    snap_mesh = MeshSnapshot.build(other, 5)
    (gw,) = snap_mesh.of_kind(gateways.KIND)
    status = gateways.gateway_status(snap_mesh, gw)
    assert status is not None and status["conditions"][0]["status"] == "False"
    assert "nginx" in status["conditions"][0]["message"]
    assert not generate(GenerationContext(snap_mesh), EDGE).get(LISTENER).items


@pytest.mark.parametrize(("listener", "message"), [
    ("{name: tls, port: 9443, protocol: TLS, tls: {certificateRefs: [{name: c}]}}",
     "pass TLS through"),
    ("{name: u, port: 53, protocol: UDP}", "UDP listeners are not supported"),
    ("{name: t, port: 5432, protocol: TCP, hostname: db.example.com}",
     "not used by TCP listeners"),
    ("{name: h, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}",
     "selector: goes with from: Selector"),
    ("{name: s, port: 443, protocol: HTTPS}", "needs tls.certificateRefs"),
    ("{name: h, port: 80, protocol: HTTP, hostname: 10.0.0.1}", "not a hostname"),
])
def test_what_is_not_built_is_refused_by_name(listener: str, message: str) -> None:
    doc = f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: g}}
spec: {{gatewayClassName: shoal, listeners: [{listener}]}}
"""
    with pytest.raises(ValidationError, match=message):
        parse_yaml(doc)


def test_a_route_has_service_or_gateway_parents_not_both() -> None:
    with pytest.raises(ValidationError, match="not both"):
        parse_yaml("""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: edge}, {group: "", kind: Service, name: web}]
""")


_LABEL = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
_HOST = st.builds(lambda wild, labels: ("*." if wild else "") + ".".join(labels),
                  st.booleans(), st.lists(_LABEL, min_size=1, max_size=3))


@given(_HOST, st.lists(_HOST, max_size=3), _HOST)
def test_a_route_is_served_only_for_hosts_both_accept(listener_host: str,
                                                      route_hosts: list[str],
                                                      request: str) -> None:
    """Every hostname the intersection gives is accepted by the listener and by one of
    the route's hostnames (a request host they both match is covered by one of them)."""
    lis = Listener(name="l", port=80, protocol="HTTP", hostname=listener_host)
    got = gateways.hostnames(lis, route_hosts)

    def match(pattern: str, host: str) -> bool:
        return pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])
                                   and host != pattern[2:])

    concrete = request.removeprefix("*.")
    for h in got:
        assert match(listener_host, h) or h == listener_host
        assert not route_hosts or any(match(r, h) or r == h for r in route_hosts)
    if match(listener_host, concrete) and any(match(r, concrete) for r in route_hosts):
        assert any(match(h, concrete) for h in got)


_LISTENER = st.fixed_dictionaries({
    "name": st.sampled_from(["a", "b", "c"]),
    "port": st.sampled_from([8080, 8443, 9000]),
    "protocol": st.sampled_from(["HTTP", "HTTPS", "TLS", "TCP"]),
}, optional={
    "hostname": _HOST,
    "allowedRoutes": st.fixed_dictionaries({"namespaces": st.fixed_dictionaries(
        {"from": st.sampled_from(["All", "Same", "Selector"])})}),
    "tls": st.sampled_from([{"certificateRefs": [{"name": "web-cert"}]},
                            {"mode": "Passthrough"}]),
})
_PARENT = st.fixed_dictionaries({"name": st.sampled_from(["edge", "other"])}, optional={
    "sectionName": st.sampled_from(["a", "b", "zz"]),
    "port": st.sampled_from([8080, 8443]),
    "namespace": st.sampled_from(["shop", "front"]),
})


@settings(max_examples=100, deadline=None)
@given(st.lists(_LISTENER, min_size=1, max_size=3), st.lists(_PARENT, min_size=1, max_size=2),
       st.lists(_HOST, max_size=2), st.sampled_from(["shop", "front"]),
       st.sampled_from(["HTTPRoute", "TLSRoute", "TCPRoute"]))
def test_every_gateway_and_route_the_api_accepts_is_served_or_says_why(
        listeners: list[dict], parents: list[dict], hosts: list[str], route_ns: str,
        kind: str) -> None:
    """Random Gateways and routes: each is refused with a ValidationError or accepted;
    accepted ones give the gateway proxy a config (never an exception) and statuses
    whose attached-route counts agree with the routes' own Accepted conditions."""
    import yaml

    docs = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": "edge", "namespace": "shop"},
             "spec": {"gatewayClassName": "shoal", "listeners": listeners}},
            {"apiVersion": "gateway.networking.k8s.io/" + (
                "v1" if kind == "HTTPRoute" else "v1alpha2"), "kind": kind,
             "metadata": {"name": "r", "namespace": route_ns},
             "spec": {"parentRefs": parents, "hostnames": hosts,
                      "rules": [{"backendRefs": [{"name": "web", "namespace": "shop",
                                                  "port": 8080}]}]}}]
    try:
        extra = parse_yaml(yaml.safe_dump_all(docs))
    except ValidationError:
        return
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build(base + extra, 9)
    generate(GenerationContext(m), EDGE)
    (gw,) = m.of_kind(gateways.KIND)
    (route,) = m.of_kind(kind)
    gw_status, route_status = gateways.gateway_status(m, gw), gamma.route_status(m, route)
    assert gw_status is not None and route_status is not None
    accepted = sum(1 for p in route_status["parents"] for c in p["conditions"]
                   if c["type"] == "Accepted" and c["status"] == "True"
                   and p["parentRef"]["name"] == "edge"
                   and p["parentRef"]["namespace"] == "shop")
    attached = sum(lis["attachedRoutes"] for lis in gw_status["listeners"])
    assert (accepted > 0) is (attached > 0)


L4 = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: shoal
  listeners:
  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com",
     tls: {mode: Passthrough}}
  - {name: tcp, port: 8080, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [web.example.com]
  rules: [{backendRefs: [{name: web, port: 8080, weight: 3}, {name: web-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: raw, namespace: shop}
spec:
  parentRefs: [{name: edge, port: 8080}]
  rules: [{backendRefs: [{name: web-v2, port: 8080}]}]
"""


def test_tls_passthrough_and_tcp_listeners_take_their_routes(tmp_path: Path) -> None:
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build(base + parse_yaml(L4), 6)
    snap = generate(GenerationContext(m), EDGE)
    listeners = {lis.address.socket_address.port_value: lis
                 for lis in snap.get(LISTENER).items.values()}
    assert sorted(listeners) == [8080, 8443]
    chains = listeners[8443].filter_chains
    assert [list(c.filter_chain_match.server_names) for c in chains] == [["web.example.com"]]
    text = str(listeners[8080])
    assert "outbound|8080||web-v2.shop.svc.cluster.local" in text
    (vs,) = [v for v in m.of_kind("VirtualService") if v.spec.tls]
    assert [d.weight for d in vs.spec.tls[0].route] == [75, 25]
    for route in m.of_kind("TLSRoute") + m.of_kind("TCPRoute"):
        status = gamma.route_status(m, route)
        assert status is not None
        assert status["parents"][0]["conditions"][0]["status"] == "True", route.metadata.name
    (gw,) = m.of_kind(gateways.KIND)
    status = gateways.gateway_status(m, gw)
    assert status is not None
    assert [(lis["supportedKinds"][0]["kind"], lis["attachedRoutes"])
            for lis in status["listeners"]] == [("TLSRoute", 1), ("TCPRoute", 1)]
    if envoy_binary() is not None:
        result = envoy_validate(static_bootstrap(snap, "edge-1.shop"), tmp_path / "b.json")
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_listener_takes_only_its_protocols_routes() -> None:
    wrong = L4.replace("sectionName: tls", "sectionName: tcp")
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    m = MeshSnapshot.build(base + parse_yaml(wrong), 6)
    (route,) = m.of_kind("TLSRoute")
    status = gamma.route_status(m, route)
    assert status is not None
    accepted = status["parents"][0]["conditions"][0]
    assert (accepted["status"], accepted["reason"]) == ("False", "NotAllowedByListeners")


SELECTED = """apiVersion: v1
kind: Namespace
metadata: {name: front, labels: {team: web}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: %s
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchExpressions: [{key: team, operator: In, values: [web]}]}
"""


def test_listeners_select_route_namespaces_by_their_labels() -> None:
    """allowedRoutes from: Selector, by the labels of Namespace documents (and
    kubernetes.io/metadata.name, which every namespace has)."""
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    route = ELSEWHERE % ("http", "api.example.com")
    for labels, reason in (("{team: web}", "Accepted"), ("{team: db}", "NotAllowedByListeners")):
        docs = (SELECTED % "shoal").replace("{team: web}", labels)
        m = MeshSnapshot.build(base + parse_yaml(docs + "---\n" + route), 7)
        (r,) = m.of_kind("HTTPRoute")
        status = gamma.route_status(m, r)
        assert status is not None
        assert status["parents"][0]["conditions"][0]["reason"] == reason, labels
    by_name = (SELECTED % "shoal").replace(
        "{key: team, operator: In, values: [web]}",
        "{key: kubernetes.io/metadata.name, operator: In, values: [front]}")
    m = MeshSnapshot.build(base + parse_yaml(by_name + "---\n" + route), 7)
    (r,) = m.of_kind("HTTPRoute")
    assert gamma.route_status(m, r)["parents"][0]["conditions"][0]["reason"] == "Accepted"


def test_a_gateway_class_document_decides_whose_gateways_they_are() -> None:
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    mine = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: %s}
spec: {controllerName: %s}
"""
    for name, controller, served in (("edge-class", "shoal.io/gateway-controller", True),
                                     ("edge-class", "example.com/other", False),
                                     ("istio", "istio.io/gateway-controller", False)):
        docs = SELECTED % name + "---\n" + mine % (name, controller)
        m = MeshSnapshot.build(base + parse_yaml(docs), 8)
        listeners = generate(GenerationContext(m), EDGE).get(LISTENER).items
        assert bool(listeners) is served, (name, controller)
        (gc,) = m.of_kind("GatewayClass")
        assert (gateways.class_status(gc) is not None) is (controller.startswith("shoal"))
    (gc,) = parse_yaml(mine % ("x", "y"))
    assert resolve_kind("gc").name == "GatewayClass" and resolve_kind("ns").name == "Namespace"
    (ns,) = parse_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: front}\n")
    assert ns.dump()["spec"] == {}  # a Namespace document needs no spec


def test_a_certificate_in_another_namespace_is_refused_in_status() -> None:
    """certificateRefs may name the Gateway's own namespace (the conformance manifests
    do); another namespace's secret is not served, and the listener's status says so."""
    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    for namespace, served in (("shop", True), ("other", False)):
        gw = MESH[MESH.index("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway"):]
        gw = gw[:gw.index("---")].replace("[{name: web-cert}]",
                                          f"[{{name: web-cert, namespace: {namespace}}}]")
        m = MeshSnapshot.build(base + parse_yaml(gw), 10)
        ports = {lis.address.socket_address.port_value
                 for lis in generate(GenerationContext(m), EDGE).get(LISTENER).items.values()}
        assert (8443 in ports) is served
        (g,) = m.of_kind(gateways.KIND)
        status = gateways.gateway_status(m, g)
        assert status is not None
        https = next(lis for lis in status["listeners"] if lis["name"] == "https")
        resolved = next(c for c in https["conditions"] if c["type"] == "ResolvedRefs")
        assert (resolved["status"] == "True") is served, resolved


def test_analyze_says_why_a_gateway_or_route_is_not_used() -> None:
    from shoal.analyze import analyze

    base = [r for r in parse_yaml(MESH) if r.kind not in (gateways.KIND, "HTTPRoute")]
    gw = MESH[MESH.index("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway"):]
    gw = gw[:gw.index("---")]
    route = ELSEWHERE % ("https", "web.example.com")  # from another namespace: not taken
    codes = {f.code: f for f in analyze(base + parse_yaml(gw + "---\n" + route))}
    assert "parent-not-found" not in codes  # a Gateway parent is not a Service
    assert "NotAllowedByListeners" in codes["route-not-attached"].message
    other = gw.replace("gatewayClassName: shoal", "gatewayClassName: nginx").replace(
        "[{name: web-cert}]", "[{name: web-cert, namespace: other}]")
    codes = {f.code for f in analyze(base + parse_yaml(other))}
    assert "gateway-not-served" in codes
    codes = {f.code for f in analyze(base + parse_yaml(gw.replace(
        "[{name: web-cert}]", "[{name: web-cert, namespace: other}]")))}
    assert "certificate-not-permitted" in codes


def test_a_redirect_takes_the_port_of_its_own_gateways_listener() -> None:
    """Two Gateways of one name in two namespaces, on ports 8080 and 80: a redirect that
    names no port keeps each listener's own (80 left out of Location)."""
    docs = "\n---\n".join(f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: {ns}}}
spec:
  gatewayClassName: shoal
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: moved, namespace: {ns}}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{filters: [{{type: RequestRedirect, requestRedirect: {{hostname: example.org}}}}]}}]
""" for ns, port in (("a", 8080), ("b", 80)))
    m = MeshSnapshot.build(parse_yaml(docs), 1)
    ports = {vs.metadata.namespace: vs.spec.http[0].redirect.port
             for vs in m.of_kind("VirtualService")}
    assert ports == {"a": 8080, "b": None}
