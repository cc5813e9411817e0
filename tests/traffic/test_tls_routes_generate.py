"""Generated config for TLS (SNI) routing: sidecar TLS ports with VirtualService ``tls``
rules, gateway MUTUAL / ISTIO_MUTUAL servers and AUTO_PASSTHROUGH (no network).

Golden files for the proxies below live in tests/generate/golden/tls/ (regenerate with
``UPDATE_GOLDEN=1``); each is also validated by a real ``envoy --mode validate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from shoal.api.gateway import auto_passthrough_ports
from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.testing.pki import TestCA
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.generate.tls_routes import SniRoute, first_claims
from shoal.xds.types import CLUSTER, LISTENER, ProxySnapshot, Upstream
from tests.generate.conftest import load_mesh, proxy
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap
from tests.generate.test_golden import as_json

GOLDEN = Path(__file__).resolve().parents[1] / "generate" / "golden" / "tls"

EXTRA = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: secure}
spec:
  selector: {app: secure}
  ports: [{name: tls, port: 8443, protocol: tls}]
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: secure-v1, annotations: {shoal.io/registered-by: agent}}
spec: {address: 10.0.2.1, labels: {app: secure, version: v1}, ports: {tls: 15006}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: secure-v2, annotations: {shoal.io/registered-by: agent}}
spec: {address: 10.0.2.2, labels: {app: secure, version: v2}, ports: {tls: 15006}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: secure-far, annotations: {shoal.io/registered-by: agent}}
spec:
  address: 10.9.0.1
  labels: {app: secure, version: v1, topology.istio.io/network: far}
  ports: {tls: 15006}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure}
spec:
  host: secure
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: secure, subset: v1}}]
  - match: [{sniHosts: [b.example.com, a.example.com]}]
    route:
    - {destination: {host: secure, subset: v2}, weight: 90}
    - {destination: {host: secure, subset: v1}, weight: 10}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata:
  name: edge-1
  annotations:
    shoal.io/registered-by: agent
    networking.shoal.io/gateway: edge
    networking.shoal.io/gateway-ports: "7000,7443,8443,9443,15443"
    networking.shoal.io/gateway-credentials: "edge-cert,edge-cert-cacert,plain-cert"
spec:
  address: 10.0.3.1
  labels: {app: edge, istio: edge, topology.istio.io/network: near}
  serviceAccount: edge
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: edge}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: edge-cert, subjectAltNames: [client.example.com]}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [no-ca.example.com]
    tls: {mode: MUTUAL, credentialName: plain-cert}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [optional.example.com]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: edge-cert}
  - port: {number: 9443, name: mesh, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 7000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 7443, name: passthrough, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-routes}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{route: [{destination: {host: productpage}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-tls-a}
spec:
  hosts: ["*.example.com"]
  gateways: [edge]
  tls: [{match: [{sniHosts: [a.example.com]}], route: [{destination: {host: secure}}]}]
  tcp: [{route: [{destination: {host: mongodb}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-tls-b}
spec:
  hosts: ["*.example.com"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com, b.example.com]}]
    route: [{destination: {host: secure, subset: v2}}]
"""

PROXIES = {
    "productpage-v1.default": proxy("productpage-v1", upstreams=(
        Upstream("secure", 8443, 16443),)),
    "edge-1.default": proxy("edge-1", outbound_port=0),
}


@pytest.fixture(scope="module")
def ctx() -> GenerationContext:
    return GenerationContext(load_mesh(EXTRA))


def _tcp_proxy(chain) -> tcp_proxy_pb2.TcpProxy:  # type: ignore[no-untyped-def]
    """The chain's TCP proxy (after any RBAC filters of policies selecting the gateway)."""
    out = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[-1].typed_config.Unpack(out)
    return out


def _listener(snap: ProxySnapshot, name: str) -> listener_pb2.Listener:
    return snap.resources[LISTENER].items[name]


def test_first_claims_give_each_sni_name_to_the_first_rule() -> None:
    a, b, c = (("x", 100),), (("y", 100),), (("z", 100),)
    got = first_claims([(["a.example.com"], a), (["b.example.com", "a.example.com"], b),
                        (["*.example.com"], c), (["c.example.com"], a), (["*"], b),
                        (["d.other"], c)])
    assert got == [SniRoute(("a.example.com",), a), SniRoute(("b.example.com",), b),
                   SniRoute(("*.example.com",), c), SniRoute((), b)]


def test_sidecar_tls_port_routes_by_sni_with_a_fallback(ctx: GenerationContext) -> None:
    snap = generate(ctx, PROXIES["productpage-v1.default"])
    lis = _listener(snap, "upstream|secure|8443")
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chains = list(lis.filter_chains)
    assert [list(c.filter_chain_match.server_names) for c in chains] == [
        ["a.example.com"], ["b.example.com"], []]
    fqdn = "secure.default.svc.cluster.local"
    assert _tcp_proxy(chains[0]).cluster == f"outbound|8443|v1|{fqdn}"
    weighted = {(w.name, w.weight) for w in _tcp_proxy(chains[1]).weighted_clusters.clusters}
    assert weighted == {(f"outbound|8443|v2|{fqdn}", 90), (f"outbound|8443|v1|{fqdn}", 10)}
    assert _tcp_proxy(chains[2]).cluster == f"outbound|8443||{fqdn}"  # any other SNI


def test_tls_port_without_tls_rules_is_a_plain_tcp_proxy() -> None:
    without_vs = EXTRA.split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService")[0]
    mesh = load_mesh(without_vs)
    snap = generate(GenerationContext(mesh), PROXIES["productpage-v1.default"])
    lis = _listener(snap, "upstream|secure|8443")
    assert not lis.listener_filters and len(lis.filter_chains) == 1


def test_mesh_virtual_service_with_tls_routes_is_accepted() -> None:
    vs = parse_yaml("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: s}
spec:
  hosts: [secure]
  tls: [{match: [{sniHosts: ["*.example.com"]}], route: [{destination: {host: secure}}]}]
""")
    assert vs[0].spec.tls[0].match[0].sni_hosts == ["*.example.com"]
    with pytest.raises(ValidationError, match="SNI host"):
        parse_yaml(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: s}\n"
            "spec: {hosts: [s], tls: [{match: [{sniHosts: ['a.*.com']}], "
            "route: [{destination: {host: s}}]}]}")


def test_gateway_mutual_verifies_clients_against_the_credential_ca(
        ctx: GenerationContext) -> None:
    snap = generate(ctx, PROXIES["edge-1.default"])
    lis = _listener(snap, "gateway|8443")
    by_sni = {tuple(c.filter_chain_match.server_names): c for c in lis.filter_chains}
    # no-ca.example.com: MUTUAL but the gateway holds no CA for plain-cert -> no chain
    assert set(by_sni) == {("mtls.example.com",), ("optional.example.com",)}
    ctxs = {}
    for sni, chain in by_sni.items():
        d = tls_pb2.DownstreamTlsContext()
        assert chain.transport_socket.typed_config.Unpack(d)
        ctxs[sni[0]] = d
    mutual = ctxs["mtls.example.com"]
    assert mutual.require_client_certificate.value is True
    combined = mutual.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "edge-cert-cacert"
    san = combined.default_validation_context.match_typed_subject_alt_names[0]
    assert san.matcher.exact == "client.example.com" and san.san_type == san.DNS
    assert ctxs["optional.example.com"].require_client_certificate.value is False


def test_gateway_istio_mutual_uses_the_mesh_identity(ctx: GenerationContext) -> None:
    snap = generate(ctx, PROXIES["edge-1.default"])
    chain = _listener(snap, "gateway|9443").filter_chains[0]
    d = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(d)
    assert d.require_client_certificate.value is True
    assert d.common_tls_context.tls_certificate_sds_secret_configs[0].name == "default"


def test_auto_passthrough_routes_mesh_sni_to_local_endpoints(ctx: GenerationContext) -> None:
    snap = generate(ctx, PROXIES["edge-1.default"])
    lis = _listener(snap, "gateway|15443")
    assert lis.listener_filters[0].name == "envoy.filters.listener.tls_inspector"
    sni = {c.filter_chain_match.server_names[0]: _tcp_proxy(c).cluster
           for c in lis.filter_chains}
    fqdn = "secure.default.svc.cluster.local"
    for subset in ("", "v1", "v2"):
        name = f"outbound_.8443_.{subset}_.{fqdn}"
        assert sni[name] == name
    assert "outbound_.9080_._.productpage.default.svc.cluster.local" in sni
    assert "outbound_.50051_._.catalog.shop.svc.cluster.local" in sni
    cds = snap.resources[CLUSTER].items
    v1 = cds[f"outbound_.8443_.v1_.{fqdn}"]
    addrs = [e.endpoint.address.socket_address for g in v1.load_assignment.endpoints
             for e in g.lb_endpoints]
    # secure-far is in another network and the gateway itself is no endpoint; only
    # workloads with a sidecar (mTLS) are reachable through the gateway
    assert [(a.address, a.port_value) for a in addrs] == [("10.0.2.1", 15006)]
    assert not v1.HasField("transport_socket") and not v1.transport_socket_matches
    ratings = cds["outbound_.9080_._.ratings.default.svc.cluster.local"]
    assert not ratings.load_assignment.endpoints  # ratings-v1 has no sidecar


def test_gateway_passthrough_gives_each_sni_to_the_oldest_rule(ctx: GenerationContext
                                                                ) -> None:
    snap = generate(ctx, PROXIES["edge-1.default"])
    chains = _listener(snap, "gateway|7443").filter_chains
    fqdn = "secure.default.svc.cluster.local"
    assert [(list(c.filter_chain_match.server_names), _tcp_proxy(c).cluster)
            for c in chains] == [(["a.example.com"], f"outbound|8443||{fqdn}"),
                                 (["b.example.com"], f"outbound|8443|v2|{fqdn}")]
    tcp = _listener(snap, "gateway|7000").filter_chains
    assert [_tcp_proxy(c).cluster for c in tcp] == [
        "outbound|27017||mongodb.default.svc.cluster.local"]


def test_auto_passthrough_ports_are_the_multicluster_contract(ctx: GenerationContext) -> None:
    mesh = ctx.mesh
    gateways = mesh.of_kind("Gateway")
    assert auto_passthrough_ports(mesh.workload("default", "edge-1"), gateways) == [15443]
    assert auto_passthrough_ports(mesh.workload("default", "secure-v1"), gateways) == []


def test_sidecars_get_no_sni_clusters(ctx: GenerationContext) -> None:
    snap = generate(ctx, PROXIES["productpage-v1.default"])
    assert not any(n.startswith("outbound_.") for n in snap.resources[CLUSTER].items)


@pytest.mark.parametrize("node_id", sorted(PROXIES))
def test_golden(ctx: GenerationContext, node_id: str) -> None:
    got = as_json(generate(ctx, PROXIES[node_id]))
    path = GOLDEN / f"{node_id}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1"
    assert got == path.read_text(), f"{path} differs; if intended, run with UPDATE_GOLDEN=1"


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize("node_id", sorted(PROXIES))
def test_envoy_accepts(ctx: GenerationContext, node_id: str, tmp_path: Path) -> None:
    boot = static_bootstrap(generate(ctx, PROXIES[node_id]), node_id)
    test_ca = TestCA()
    cert, key = test_ca.leaf("edge", dns=["mtls.example.com"]).write(tmp_path, "edge")
    for name in ("edge-cert", "plain-cert"):  # the gateway's static secrets
        secret = boot.static_resources.secrets.add(name=name)
        secret.tls_certificate.certificate_chain.filename = str(cert)
        secret.tls_certificate.private_key.filename = str(key)
    ca = boot.static_resources.secrets.add(name="edge-cert-cacert")
    ca.validation_context.trusted_ca.filename = str(test_ca.write(tmp_path / "ca.pem"))
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
