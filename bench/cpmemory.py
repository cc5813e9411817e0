"""Control-plane memory per connected proxy: a real control plane (sqlite) with the
bench mesh, N fake ADS clients on one gRPC connection (all synced), the control plane's
RSS before and after, per proxy. Run it with a small and a large mesh to separate the
per-stream cost from what grows with the mesh.

    .venv/bin/python -m bench.cpmemory --proxies 1000 --services 200
    .venv/bin/python -m bench.cpmemory --proxies 1000 --services 5

Prints only (docs/benchmarks.md quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import grpc

from bench import mesh
from bench.machine import proc_stat
from shoal.testing import FakeAdsClient
from shoal.testing.local import ControlPlaneProcess
from shoal.xds.node import node_metadata
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, ProxyMetadata


async def _connect(cp: ControlPlaneProcess, proxies: int, services: int,
                   delta: bool) -> float:
    """Connect, wait until every client has all four types; the CP's RSS growth (MB)."""
    channel = grpc.aio.insecure_channel(cp.xds)
    clients = [
        FakeAdsClient(cp.xds, f"bench-{i}.default", node_metadata(ProxyMetadata(
            workload=mesh.workload_name(i % services, (i // services) % 2),
            outbound_port=15001, app_ports={"http": 8080}), "default"), channel=channel,
            delta=delta)
        for i in range(proxies)]
    before = proc_stat(cp.pid).rss_mb
    try:
        await asyncio.gather(*(c.start() for c in clients))
        await asyncio.gather(*(c.wait_for(
            lambda c: all(t in c.versions for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)),
            timeout=600) for c in clients))
        await asyncio.sleep(3)  # pushes settled
        return proc_stat(cp.pid).rss_mb - before
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await channel.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpmemory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=1000)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--delta", action=argparse.BooleanOptionalAction, default=True,
                   help="delta xDS, the agents' default (--no-delta: state-of-the-world)")
    a = p.parse_args(argv)
    with (tempfile.TemporaryDirectory(prefix="shoal-bench-mem-") as tmp,
          ControlPlaneProcess(Path(tmp), store="sqlite") as cp):
        with cp.client() as c:
            mesh.apply_mesh(c, a.services)
        grown = asyncio.run(_connect(cp, a.proxies, a.services, a.delta))
    print(f"{a.proxies} proxies, {a.services} services: control plane RSS +{grown:.0f} MB, "
          f"{grown * 1024 / a.proxies:.0f} KB per connected proxy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
