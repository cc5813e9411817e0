"""Which proxies a store change makes the sync loop recompute.

Endpoint churn (a Workload joining or leaving a service) must recompute only the proxies
that can see that service: its own proxy, proxies without a Sidecar, and proxies whose
Sidecar's egress hosts include it. A routing change recomputes everyone.
"""

from __future__ import annotations

import asyncio

from shoal.api import load_resource
from shoal.api.parse import parse_yaml
from shoal.store.memory import MemoryStore
from shoal.xds.cache import SnapshotCache
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.sync import Sync
from shoal.xds.types import Proxy, ProxyMetadata, ProxySnapshot

MESH = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web, namespace: front}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: db, namespace: back}
spec: {selector: {app: db}, ports: [{name: tcp, port: 5432, protocol: tcp}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: front}
spec: {address: 127.0.0.1, labels: {app: web}, ports: {http: 18080}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: back}
spec: {address: 127.0.0.1, labels: {app: db}, ports: {tcp: 15432}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: lonely, namespace: front}
spec: {address: 127.0.0.1, labels: {app: lonely}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: own-namespace-only, namespace: front}
spec:
  egress: [{hosts: ["./*"]}]
"""


def workload(name: str, ns: str, app: str, port: int) -> str:
    return (f"apiVersion: mesh.shoal.io/v1alpha1\nkind: Workload\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {{address: 127.0.0.1, labels: {{app: {app}}}, ports: {{x: {port}}}}}\n")


def proxy(workload: str, namespace: str) -> Proxy:
    return Proxy(node_id=f"{workload}.{namespace}", namespace=namespace,
                 metadata=ProxyMetadata(workload=workload, outbound_port=15001))


class Counting:
    def __init__(self) -> None:
        self.computed: list[str] = []

    def __call__(self, ctx: GenerationContext, p: Proxy) -> ProxySnapshot:
        self.computed.append(p.node_id)
        return generate(ctx, p)


async def started(store: MemoryStore, gen: Counting) -> tuple[Sync, asyncio.Task[None]]:
    await store.apply(parse_yaml(MESH))
    sync = Sync(store, SnapshotCache(), generator=gen, debounce=3600, max_delay=3600)
    ready = asyncio.Event()
    task = asyncio.create_task(sync.run(ready))
    await ready.wait()
    for p in (proxy("web-1", "front"), proxy("lonely", "front"), proxy("db-1", "back"),
              proxy("gateway", "edge")):
        await sync.proxy_connected(p)
    gen.computed.clear()
    return sync, task


async def settle(sync: Sync) -> None:
    for _ in range(20):  # let the watch deliver the event
        await asyncio.sleep(0.01)
    await sync.push_pending()


async def test_endpoint_churn_skips_proxies_scoped_away_from_the_service() -> None:
    store, gen = MemoryStore(loads=load_resource), Counting()
    sync, task = await started(store, gen)
    try:
        # a second db replica in namespace back: front's Sidecar hides back/*
        await store.apply(parse_yaml(workload("db-2", "back", "db", 15433)))
        await settle(sync)
        assert sorted(gen.computed) == ["db-1.back", "gateway.edge"]
        gen.computed.clear()
        # a second web replica: everyone in front sees it, so does the unscoped gateway
        await store.apply(parse_yaml(workload("web-2", "front", "web", 18081)))
        await settle(sync)
        assert sorted(gen.computed) == ["db-1.back", "gateway.edge", "lonely.front",
                                        "web-1.front"]
    finally:
        task.cancel()


async def test_a_workload_of_no_service_recomputes_only_its_own_proxy() -> None:
    store, gen = MemoryStore(loads=load_resource), Counting()
    sync, task = await started(store, gen)
    try:
        await store.apply(parse_yaml(workload("lonely", "front", "lonely", 19000)))
        await settle(sync)
        assert gen.computed == ["lonely.front"]
    finally:
        task.cancel()


async def test_routing_changes_recompute_every_proxy() -> None:
    store, gen = MemoryStore(loads=load_resource), Counting()
    sync, task = await started(store, gen)
    try:
        await store.apply(parse_yaml(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: db, namespace: back}\n"
            "spec: {hosts: [db], tcp: [{route: [{destination: {host: db}}]}]}\n"))
        await settle(sync)
        assert sorted(gen.computed) == ["db-1.back", "gateway.edge", "lonely.front",
                                        "web-1.front"]
    finally:
        task.cancel()
