"""Endpoints across networks (generator): other networks through their east-west gateway."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from shoal.api.parse import parse_yaml
from shoal.multicluster.labels import local_view, remote_view
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import ENDPOINT
from tests.generate.conftest import proxy
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap

WEB = "outbound|8080||web.default.svc.cluster.local"
SERVICE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}"""
EAST_WEST = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}"""
FAILOVER = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {localityLbSetting: {enabled: true}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5s}"""


def workload(name: str, app: str, address: str, *, gateway: bool = False,
             labels: str = "") -> str:
    annotations = {"shoal.io/registered-by": "agent"}
    if gateway:
        annotations |= {"networking.shoal.io/gateway": name,
                        "networking.shoal.io/gateway-ports": "15443"}
    ports = "{}" if gateway else "{http: 8080}"
    return f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {name}, annotations: {annotations}}}
spec: {{address: {address}, labels: {{app: {app}{labels}}}, ports: {ports}}}"""


def cluster_a(*, b_gateway: bool = True, a_gateway: bool = False, extra: str = "",
              network: str = "net-a") -> MeshSnapshot:
    """Cluster a's view: two web endpoints + a client here, two web endpoints (and maybe an
    east-west gateway) in cluster b on net-b."""
    local = [SERVICE, workload("web-a1", "web", "10.1.0.2"), workload("web-a2", "web", "10.1.0.3"),
             workload("client", "client", "10.1.0.4"),
             workload("client-b-net", "client", "10.1.0.5",
                      labels=", topology.istio.io/network: net-b")]
    if a_gateway:
        local += [EAST_WEST, workload("ew-a", "ew", "10.1.0.1", gateway=True,
                                      labels=", istio: eastwestgateway")]
    if extra:
        local.append(extra)
    remote = [SERVICE, workload("web-b1", "web", "10.2.0.2"), workload("web-b2", "web", "10.2.0.3")]
    if b_gateway:
        remote += [EAST_WEST, workload("ew-b", "ew", "10.2.0.1", gateway=True,
                                       labels=", istio: eastwestgateway")]
    b = parse_yaml("\n---\n".join(remote))
    gateways = [r for r in b if r.kind == "Gateway"]
    resources = [local_view(r, "a", network) for r in parse_yaml("\n---\n".join(local))]
    resources += [remote_view(r, "b", "net-b", gateways) for r in b
                  if r.kind == "Workload"]
    return MeshSnapshot.build(resources, 1, MeshConfig(cluster="a", network=network))


def endpoints(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[int, str, str, int, bool]]:
    """(priority, region, address:port, weight, mtls metadata) of every endpoint."""
    return [(g.priority, g.locality.region,
             f"{e.endpoint.address.socket_address.address}:"
             f"{e.endpoint.address.socket_address.port_value}",
             e.load_balancing_weight.value, bool(e.metadata.filter_metadata))
            for g in cla.endpoints for e in g.lb_endpoints]


def eds(mesh: MeshSnapshot, client: str = "client") -> endpoint_pb2.ClusterLoadAssignment:
    return generate(GenerationContext(mesh), proxy(client)).get(ENDPOINT).items[WEB]


def test_remote_network_endpoints_are_replaced_by_its_gateway() -> None:
    assert endpoints(eds(cluster_a())) == [
        (0, "a", "10.1.0.2:8080", 1, True), (0, "a", "10.1.0.3:8080", 1, True),
        # b's two endpoints: one gateway endpoint weighing 2, still mTLS (SNI routed)
        (0, "b", "10.2.0.1:15443", 2, True)]


def test_a_network_without_gateway_is_unreachable() -> None:
    assert [e[2] for e in endpoints(eds(cluster_a(b_gateway=False)))] == [
        "10.1.0.2:8080", "10.1.0.3:8080"]


def test_locality_failover_prefers_the_own_cluster() -> None:
    got = endpoints(eds(cluster_a(extra=FAILOVER)))
    assert [(p, addr) for p, _, addr, _, _ in got] == [
        (0, "10.1.0.2:8080"), (0, "10.1.0.3:8080"), (1, "10.2.0.1:15443")]


def test_a_proxy_on_the_other_network_reaches_it_directly_and_us_via_our_gateway() -> None:
    got = endpoints(eds(cluster_a(a_gateway=True), "client-b-net"))
    assert [(r, addr, w) for _, r, addr, w, _ in got] == [
        ("a", "10.1.0.1:15443", 2), ("b", "10.2.0.2:8080", 1), ("b", "10.2.0.3:8080", 1)]


def test_an_east_west_gateway_only_forwards_to_its_own_network() -> None:
    got = endpoints(eds(cluster_a(a_gateway=True), "ew-a"))
    assert [addr for _, _, addr, _, _ in got] == ["10.1.0.2:8080", "10.1.0.3:8080"]


def test_without_networks_every_endpoint_is_direct() -> None:
    got = endpoints(eds(cluster_a(network="")))
    assert [addr for _, _, addr, _, _ in got] == [
        "10.1.0.2:8080", "10.1.0.3:8080", "10.2.0.2:8080", "10.2.0.3:8080"]


def test_proxies_of_one_network_share_the_endpoints() -> None:
    ctx = GenerationContext(cluster_a())
    a, b = (generate(ctx, proxy(n)).get(ENDPOINT) for n in ("client", "web-a1"))
    assert a is b


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_gateway_endpoints(tmp_path: Path) -> None:
    snap = generate(GenerationContext(cluster_a(extra=FAILOVER)), proxy("client"))
    res = envoy_validate(static_bootstrap(snap, "client.default"), tmp_path / "boot.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
