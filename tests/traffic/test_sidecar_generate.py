"""Generated config for ServiceEntries, egress policy and Sidecar scopes (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.xds.generate import GenerationContext, generate, outbound
from shoal.xds.generate.egress import DFP_CLUSTER
from shoal.xds.types import CLUSTER, ENDPOINT, ROUTE, SCOPED_ROUTE
from tests.generate.conftest import load_mesh, proxy
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap
from tests.generate.tables import outbound_table

EXTRA = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-shop, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["shop/*", "*/api.example.com"]}]
"""


@pytest.fixture(scope="module")
def ctx() -> GenerationContext:
    return GenerationContext(load_mesh(EXTRA))


def test_service_entry_gets_a_dns_cluster_and_a_virtual_host(ctx: GenerationContext) -> None:
    snap = generate(ctx, proxy("productpage-v1"))
    cluster = snap.resources[CLUSTER].items["outbound|80||api.example.com"]
    assert cluster.type == cluster.STRICT_DNS
    addr = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert addr.socket_address.address == "api.example.com"
    assert "outbound|80||api.example.com" not in snap.resources[ENDPOINT].items
    rc = outbound_table(snap)
    vh = next(v for v in rc.virtual_hosts if v.name == "api.example.com:80")
    assert list(vh.domains) == ["api.example.com", "api.example.com:80"]
    assert "outbound_http" not in snap.resources[ROUTE].items  # REGISTRY_ONLY: scopes


def test_sidecar_scope_is_shared_and_limited(ctx: GenerationContext) -> None:
    a = generate(ctx, proxy("reviews-v1"))
    b = generate(ctx, proxy("reviews-v2"))
    other = generate(ctx, proxy("productpage-v1"))
    names = set(a.resources[CLUSTER].items)
    assert not any(n.endswith(".default.svc.cluster.local") and n.startswith("outbound|")
                   for n in names)
    assert any(n.endswith(".shop.svc.cluster.local") for n in names)
    assert "outbound|80||api.example.com" in names
    # same Sidecar: the very same objects; no Sidecar: the mesh-wide shared set
    assert a.resources[ENDPOINT] is b.resources[ENDPOINT]
    assert a.resources[ROUTE] is b.resources[ROUTE]
    assert a.resources[SCOPED_ROUTE] is b.resources[SCOPED_ROUTE]
    assert other.resources[ENDPOINT] is outbound.table(ctx).endpoint_resources
    domains = set(a.resources[SCOPED_ROUTE].items)
    assert "ratings" not in domains and "api.example.com" in domains


def test_allow_any_uses_the_dynamic_forward_proxy(tmp_path: Path) -> None:
    base = load_mesh(EXTRA)
    mesh = MeshSnapshot.build(base.resources, 1, MeshConfig(outbound_traffic_policy="ALLOW_ANY"))
    ctx = GenerationContext(mesh)
    snap = generate(ctx, proxy("productpage-v1", app_ports={"http": 9080}))
    assert DFP_CLUSTER in snap.resources[CLUSTER].items
    last = snap.resources[ROUTE].items["outbound_http"].virtual_hosts[-1]
    assert last.routes[0].route.cluster == DFP_CLUSTER
    if envoy_binary().is_file():
        res = envoy_validate(static_bootstrap(snap, "productpage-v1.default"),
                             tmp_path / "b.json")
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
