"""Fixtures: the bookinfo-like mesh (mesh.yaml) and a few proxies of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext
from shoal.xds.types import LISTENER, Proxy, ProxyMetadata, ProxySnapshot, Upstream

HERE = Path(__file__).parent


def load_mesh(extra: str = "", revision: int = 7) -> MeshSnapshot:
    text = (HERE / "mesh.yaml").read_text()
    if extra:
        text += "\n---\n" + extra
    return MeshSnapshot.build(parse_yaml(text), revision=revision)


def http_connection_managers(snap: ProxySnapshot) -> Iterator[hcm_pb2.HttpConnectionManager]:
    """Every HTTP connection manager in a proxy's listeners, unpacked."""
    for lis in snap.get(LISTENER).items.values():
        for chain in lis.filter_chains:
            for f in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm):
                    yield hcm


def proxy(workload: str, namespace: str = "default", *, outbound_port: int = 15001,
          app_ports: dict[str, int] | None = None,
          upstreams: tuple[Upstream, ...] = ()) -> Proxy:
    meta = ProxyMetadata(workload=workload, outbound_port=outbound_port,
                         app_ports=app_ports or {}, upstreams=upstreams)
    return Proxy(node_id=f"{workload}.{namespace}", namespace=namespace, metadata=meta)


# The proxies that have golden files (tests/generate/golden/<node id>.json).
GOLDEN_PROXIES: dict[str, Proxy] = {
    p.node_id: p
    for p in (
        proxy("productpage-v1", app_ports={"http": 9080}, upstreams=(
            Upstream("mongodb", 27017, 16017),
            Upstream("catalog.shop", 50051, 16051),
            Upstream("catalog.shop.svc.cluster.local", 80, 16080),
            Upstream("no-such-service", 1234, 16099),  # unknown: no listener
        )),
        proxy("reviews-v2", app_ports={"http": 9081}),
        proxy("mongodb-v1"),
        proxy("catalog-1", "shop", app_ports={"grpc": 50051, "web": 8080},
              upstreams=(Upstream("ratings.default", 9080, 16080),)),
        proxy("newcomer"),  # not registered yet: outbound only
    )
}


@pytest.fixture(scope="module")
def mesh() -> MeshSnapshot:
    return load_mesh()


@pytest.fixture(scope="module")
def ctx(mesh: MeshSnapshot) -> GenerationContext:
    return GenerationContext(mesh)
