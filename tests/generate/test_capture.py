"""Transparent capture (pods): the capture listeners, as golden files validated by Envoy."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2

from shoal.registry import vip
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.xds.generate import GenerationContext, capture, generate
from shoal.xds.node import CaptureMetadata
from shoal.xds.types import LISTENER, Proxy

from .conftest import load_mesh
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap
from .test_golden import GOLDEN, as_json

# a workload in a pod: its pod IP and its app's port are its endpoint (Istio style)
POD = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, annotations: {shoal.io/registered-by: agent}}
spec:
  address: 10.61.0.5
  labels: {app: web}
  ports: {http: 8080}
  serviceAccount: web
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-2, annotations: {shoal.io/registered-by: agent}}
spec:
  address: 10.61.0.6
  labels: {app: web}
  ports: {http: 8080}
  serviceAccount: web
"""


def capture_proxy(workload: str, namespace: str = "default",
                  dns_upstreams: tuple[str, ...] = ()) -> Proxy:
    meta = CaptureMetadata(workload=workload, outbound_port=0, app_ports={"http": 8080},
                           dns_upstreams=dns_upstreams)
    return Proxy(node_id=f"{workload}.{namespace}", namespace=namespace, metadata=meta)


@pytest.fixture(scope="module")
def pod_mesh() -> MeshSnapshot:
    return load_mesh(POD)


def listeners(mesh: MeshSnapshot, proxy: Proxy) -> dict[str, listener_pb2.Listener]:
    return dict(generate(GenerationContext(mesh), proxy).get(LISTENER).items)


def test_golden_capture_proxy(pod_mesh: MeshSnapshot) -> None:
    got = as_json(generate(GenerationContext(pod_mesh), capture_proxy("web-1")))
    path = GOLDEN / "capture-web-1.default.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), f"{path} differs; if intended, run with UPDATE_GOLDEN=1"


def test_capture_proxy_has_capture_listeners_only(pod_mesh: MeshSnapshot) -> None:
    lds = listeners(pod_mesh, capture_proxy("web-1"))
    assert set(lds) == {capture.OUTBOUND_LISTENER, capture.INBOUND_LISTENER,
                        capture.DNS_LISTENER}
    inbound = lds[capture.INBOUND_LISTENER]
    assert {c.filter_chain_match.destination_port.value for c in inbound.filter_chains} == {8080}
    assert inbound.listener_filters[0].name == capture.ORIGINAL_DST
    # outbound: the service's VIP and its endpoints' pod IPs, on the service port
    out = lds[capture.OUTBOUND_LISTENER]
    web_vip = str(pod_mesh.vips["web.default.svc.cluster.local"])
    chain = next(c for c in out.filter_chains if c.name.startswith("outbound|8080||web."))
    assert [r.address_prefix for r in chain.filter_chain_match.prefix_ranges] == [
        web_vip, "10.61.0.5", "10.61.0.6"]
    # REGISTRY_ONLY: nothing else leaves the pod
    assert not out.HasField("default_filter_chain")


def test_unregistered_capture_proxy_has_no_inbound(pod_mesh: MeshSnapshot) -> None:
    lds = listeners(pod_mesh, capture_proxy("not-yet"))
    assert capture.INBOUND_LISTENER not in lds and capture.OUTBOUND_LISTENER in lds


def test_allow_any_passes_unknown_destinations_through(pod_mesh: MeshSnapshot) -> None:
    mesh = dataclasses.replace(pod_mesh, config=MeshConfig(outbound_traffic_policy="ALLOW_ANY"))
    snap = generate(GenerationContext(mesh), capture_proxy("web-1"))
    out = snap.get(LISTENER).items[capture.OUTBOUND_LISTENER]
    assert out.default_filter_chain.name == "passthrough"
    from shoal.xds.types import CLUSTER
    assert capture.PASSTHROUGH_CLUSTER in snap.get(CLUSTER).items


def test_dns_names_follow_istio_host_semantics(pod_mesh: MeshSnapshot) -> None:
    table = capture.dns_table(pod_mesh, "default",
                              GenerationContext(pod_mesh).scope(None))
    names = {d.name: d.endpoint.address_list.address[0] for d in table.virtual_domains}
    web = str(pod_mesh.vips["web.default.svc.cluster.local"])
    assert names["web"] == names["web.default"] == names["web.default.svc"] == web
    assert "catalog" not in names and "catalog.shop" in names  # other namespace: qualified


def test_vips_are_deterministic_and_distinct() -> None:
    hosts = [f"svc-{i}.default.svc.cluster.local" for i in range(2000)]
    a = vip.allocate(hosts)
    assert a == vip.allocate(reversed(hosts))
    assert len(set(a.values())) == len(hosts)
    assert all(v in vip.VIP_RANGE for v in a.values())
    # a service keeps its VIP when unrelated ones come and go (no collision)
    assert vip.allocate(hosts[:10])["svc-3.default.svc.cluster.local"] == \
        a["svc-3.default.svc.cluster.local"]


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize("policy", ["REGISTRY_ONLY", "ALLOW_ANY"])
def test_envoy_accepts_capture_config(pod_mesh: MeshSnapshot, policy: str,
                                      tmp_path: Path) -> None:
    mesh = dataclasses.replace(pod_mesh, config=MeshConfig(outbound_traffic_policy=policy))
    boot = static_bootstrap(generate(GenerationContext(mesh), capture_proxy("web-1")),
                            "web-1.default")
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "OK" in res.stdout
    json.loads((tmp_path / "bootstrap.json").read_text())


def test_dns_forwards_names_outside_the_mesh_to_the_upstreams(pod_mesh: MeshSnapshot
                                                               ) -> None:
    plain = listeners(pod_mesh, capture_proxy("web-1"))[capture.DNS_LISTENER]
    forwarding = listeners(pod_mesh, capture_proxy(
        "web-1", dns_upstreams=("10.0.0.2:53", "10.0.0.3:5353")))[capture.DNS_LISTENER]
    configs = []
    for lis in (plain, forwarding):
        config = dns_filter_pb2.DnsFilterConfig()
        lis.listener_filters[0].typed_config.Unpack(config)
        configs.append(config)
    assert not configs[0].HasField("client_config")  # no upstream: outside names unanswered
    client = configs[1].client_config
    resolver = cares_dns_resolver_pb2.CaresDnsResolverConfig()
    client.typed_dns_resolver_config.typed_config.Unpack(resolver)
    assert [(r.socket_address.address, r.socket_address.port_value)
            for r in resolver.resolvers] == [("10.0.0.2", 53), ("10.0.0.3", 5353)]
    # the mesh's own suffix is answered here (NXDOMAIN when unknown), never forwarded
    table = configs[1].server_config.inline_dns_table
    assert [m.suffix for m in table.known_suffixes] == ["svc.cluster.local"]
    assert {d.name for d in table.virtual_domains} == \
        {d.name for d in configs[0].server_config.inline_dns_table.virtual_domains}


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_dns_forwarding(pod_mesh: MeshSnapshot, tmp_path: Path) -> None:
    proxy = capture_proxy("web-1", dns_upstreams=("10.0.0.2:53",))
    boot = static_bootstrap(generate(GenerationContext(pod_mesh), proxy), "web-1.default")
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_a_capture_proxy_that_sees_no_service_yet(tmp_path: Path) -> None:
    """A pod's first config can come before any service is visible to it: the outbound
    listener must still be valid (Envoy NACKs a listener without any filter chain)."""
    mesh = MeshSnapshot.build([], 1, MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"))
    boot = static_bootstrap(generate(GenerationContext(mesh), capture_proxy("web-1")),
                            "web-1.default")
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    # no outbound listener until a service is visible: captured connections are refused
    assert "capture_outbound" not in listeners(mesh, capture_proxy("web-1"))
