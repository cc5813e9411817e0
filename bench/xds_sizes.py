"""``python -m bench.xds_sizes [--services N]``: bytes on the wire per xDS type for one
sidecar of the control-plane bench's mesh (``bench.mesh``): what a proxy is sent on
connect, and what one resource of each type costs (ADR 0036's figures)."""

from __future__ import annotations

import argparse

from bench import mesh
from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.cache import pack
from shoal.xds.generate import GenerationContext, generate, outbound_http
from shoal.xds.generate import names as xds_names
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    SHORT_NAMES,
    Proxy,
    ProxyMetadata,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--services", type=int, default=1000, help="(%(default)s)")
    a = p.parse_args()
    docs = mesh.mesh_yaml(a.services).split("\n---\n")
    resources = [r for k in range(0, len(docs), 1000)  # one parse is bounded (api/limits)
                 for r in parse_yaml("\n---\n".join(docs[k:k + 1000]))]
    ctx = GenerationContext(MeshSnapshot.build(resources, revision=1))
    proxy = Proxy("bench-0.default", mesh.NAMESPACE, ProxyMetadata(
        workload=mesh.workload_name(0, 0), outbound_port=15001, app_ports={"http": 8080}))
    snap = generate(ctx, proxy)
    print(f"one sidecar of {a.services} services (bench.mesh), SotW wire bytes:")
    print(f"{'type':6} {'resources':>9} {'bytes':>11} {'per resource':>13}")
    for t in (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE):
        items = snap.get(t).items
        size = sum(len(pack(m).resource_field) for m in items.values())
        print(f"{SHORT_NAMES[t]:6} {len(items):9} {size:11,} {size / max(1, len(items)):13,.0f}")
    table = outbound_http.route_table(ctx, mesh.NAMESPACE)  # what ALLOW_ANY gets instead
    print(f"single {xds_names.OUTBOUND_HTTP} table (ALLOW_ANY): "
          f"{len(pack(table).resource_field):,} bytes")


if __name__ == "__main__":
    main()
