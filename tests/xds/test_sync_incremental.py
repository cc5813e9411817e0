"""Incremental computation equals a full recomputation (issue 13).

The sync loop recomputes only the proxies a change can affect, and a new generation
context keeps what the change cannot have touched from the previous one (today: every
proxy's inbound listeners and clusters when only routing changed). Whatever the sequence
of applies, deletes, registrations and deregistrations, each proxy's snapshot in the
cache must be exactly what a fresh context computes from the same mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api import load_resource
from shoal.api.meta import ResourceKey
from shoal.api.parse import parse_yaml
from shoal.errors import NotFound
from shoal.store.memory import MemoryStore
from shoal.xds.cache import SnapshotCache
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.generate.outbound import OutboundTable
from shoal.xds.sync import Sync
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Proxy,
    ProxyMetadata,
    ProxySnapshot,
)

MESH = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{name: tcp, port: 5432, protocol: tcp}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: web, version: v1}, ports: {http: 18080}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: db}, ports: {tcp: 15432}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: client-n1, namespace: shop}
spec: {address: 10.0.0.5, labels: {app: client, topology.istio.io/network: net1}, ports: {}}
"""

# Each operation: documents to apply, or keys to delete.
OPS: dict[str, str | ResourceKey] = {
    "vs-split": """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 70}
    - {destination: {host: web, subset: v2}, weight: 30}
""",
    "vs-timeout": """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http: [{timeout: 2s, route: [{destination: {host: web}}]}]
""",
    "vs-delete": ResourceKey("VirtualService", "shop", "web"),
    # a second VirtualService for web: the older of the two wins (a change of
    # VirtualServices or Workloads reuses the routes of services whose VirtualServices
    # are the same resources: routes.KEYED_INPUTS)
    "vs-web-second": """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-second, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  http: [{retries: {attempts: 5}, route: [{destination: {host: web}}]}]
""",
    "vs-web-second-delete": ResourceKey("VirtualService", "shop", "web-second"),
    # routes that depend on the caller's labels
    "vs-source": """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-by-source, namespace: shop}
spec:
  hosts: [web]
  http:
  - match: [{sourceLabels: {app: client}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
""",
    "vs-source-delete": ResourceKey("VirtualService", "shop", "web-by-source"),
    "dr": """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
""",
    "dr-delete": ResourceKey("DestinationRule", "shop", "web"),
    "authz": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-from-shop, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
""",
    "authz-delete": ResourceKey("AuthorizationPolicy", "shop", "web-from-shop"),
    "strict": """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
""",
    "strict-v2": """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v2-only, namespace: shop}
spec: {selector: {matchLabels: {version: v2}}, mtls: {mode: STRICT}}
""",
    "permissive": """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
""",
    "web-2": """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-2, namespace: shop}
spec: {address: 10.0.0.3, labels: {app: web, version: v2}, ports: {http: 18081}}
""",
    "web-2-leaves": ResourceKey("Workload", "shop", "web-2"),
    "api-service": """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8081, protocol: http}]
""",
    "api-service-delete": ResourceKey("Service", "shop", "api"),
    "web-1-moved": """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.9, labels: {app: web, version: v1}, ports: {http: 19080}}
""",
    "httproute": """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web, port: 8080}]
""",
    "httproute-delete": ResourceKey("HTTPRoute", "shop", "web"),
    # a backend in another namespace: used only while a ReferenceGrant there allows it
    "httproute-cross": """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: echo, namespace: other}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-cross, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 8080, weight: 1},
                  {name: echo, namespace: other, port: 8080, weight: 1}]
""",
    "refgrant": """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-shop, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service}]
""",
    "refgrant-delete": ResourceKey("ReferenceGrant", "other", "from-shop"),
    "envoyfilter": """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: web, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_INBOUND}
    patch: {operation: MERGE, value: {connect_timeout: 3s}}
  - applyTo: ROUTE_CONFIGURATION
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {response_headers_to_remove: [x-internal]}}
""",
    "envoyfilter-delete": ResourceKey("EnvoyFilter", "shop", "web"),
    "web-1-relabelled": """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: web, version: v2}, ports: {http: 18080}}
""",
    # another network, reached through its east-west gateway (a Workload change that
    # changes every service's endpoints for proxies on the other network)
    "web-remote": """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-r, namespace: shop}
spec:
  address: 10.1.0.1
  labels: {app: web, version: v1, topology.istio.io/network: net2,
           security.shoal.io/tlsMode: istio}
  ports: {http: 18080}
""",
    "ew-gateway": """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata:
  name: ew-2
  namespace: shop
  annotations:
    multicluster.shoal.io/remote-cluster: c2
    networking.shoal.io/east-west-port: "15443"
spec: {address: 10.1.0.9, labels: {topology.istio.io/network: net2}, ports: {}}
""",
    "ew-gateway-leaves": ResourceKey("Workload", "shop", "ew-2"),
}

PROXIES = [
    Proxy(node_id=f"{name}.shop", namespace="shop",
          metadata=ProxyMetadata(workload=name, outbound_port=15001,
                                 app_ports={"http": 8080} if name.startswith("web") else {}))
    for name in ("web-1", "web-2", "db-1", "client-n1")
]


def wire(snapshot: ProxySnapshot | None) -> dict[str, dict[str, bytes]]:
    assert snapshot is not None
    return {t: {name: msg.SerializeToString(deterministic=True)
                for name, msg in r.items.items()}
            for t, r in snapshot.resources.items()}


@contextlib.asynccontextmanager
async def mesh_sync(proxies: list[Proxy]) -> AsyncIterator[tuple[MemoryStore, Sync, SnapshotCache]]:
    """A real sync loop over a memory store holding MESH, ``proxies`` connected."""
    store = MemoryStore(loads=load_resource)
    await store.apply(parse_yaml(MESH))
    cache = SnapshotCache()
    sync = Sync(store, cache, debounce=3600, max_delay=3600)
    ready = asyncio.Event()
    task = asyncio.create_task(sync.run(ready))
    try:
        await ready.wait()
        for p in proxies:
            await sync.proxy_connected(p)
        yield store, sync, cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def change(store: MemoryStore, sync: Sync, op: str) -> bool:
    """Apply or delete ``op`` and push; False if there was nothing to delete."""
    what = OPS[op]
    try:
        if isinstance(what, ResourceKey):
            revision = await store.delete([what])
        else:
            revision = (await store.apply(parse_yaml(what))).revision
    except NotFound:
        return False
    for _ in range(1000):  # until the watch has delivered the event and it is pushed
        await asyncio.sleep(0)
        await sync.push_pending()
        if sync.mesh.revision == revision:
            return True
    raise AssertionError(f"the sync loop never reached revision {revision}")


async def replay(ops: list[str]) -> None:
    async with mesh_sync(PROXIES) as (store, sync, cache):
        for op in ops:
            if not await change(store, sync, op):
                continue
            fresh = GenerationContext(sync.mesh)
            for p in PROXIES:
                assert wire(cache.get(p.node_id)) == wire(generate(fresh, p)), (op, p.node_id)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=8))
def test_incremental_snapshots_equal_a_full_recomputation(ops: list[str]) -> None:
    asyncio.run(replay(ops))


def test_a_reference_grant_changes_the_routes_that_use_it() -> None:
    """ReferenceGrant is an input of the routes only (no table depends on it)."""
    asyncio.run(replay(["httproute-cross", "refgrant", "refgrant-delete", "refgrant"]))


def test_a_routing_change_keeps_the_inbound_listeners() -> None:
    """Only routing changed: the new context hands out the same inbound objects."""
    async def run() -> None:
        async with mesh_sync(PROXIES[:1]) as (store, sync, cache):
            before = cache.get(PROXIES[0].node_id)
            for op in ("dr", "vs-split", "strict"):
                await change(store, sync, op)
                after = cache.get(PROXIES[0].node_id)
                assert before is not None and after is not None
                inbound = [n for n in after.resources[LISTENER].items if "inbound" in n]
                assert inbound
                same = all(after.resources[LISTENER].items[n]
                           is before.resources[LISTENER].items[n] for n in inbound)
                # routing (DestinationRule, VirtualService) keeps them; a policy rebuilds
                assert same is (op != "strict"), op
                before = after

    asyncio.run(run())


def test_a_virtual_service_change_rebuilds_only_its_services_routes() -> None:
    """A change of VirtualServices (or Workloads) only: the routes and route
    configurations of services whose VirtualServices are the same resources are the
    previous objects, not rebuilt (at 1,000 services, rebuilding all of them was a third
    of a change's generation)."""
    async def run() -> None:
        async with mesh_sync(PROXIES[:1]) as (store, sync, cache):
            await change(store, sync, "api-service")  # a second HTTP service

            def routes_of(name: str) -> object:
                service = sync.mesh.service("shop", name)
                assert service is not None
                return sync._context().routes(service, service.spec.ports[0])

            before = cache.get(PROXIES[0].node_id)
            api_routes, web_routes = routes_of("api"), routes_of("web")
            await change(store, sync, "vs-split")  # web's routes change, api's do not
            after = cache.get(PROXIES[0].node_id)
            assert routes_of("api") is api_routes  # taken over, not computed again
            assert routes_of("web") is not web_routes
            assert before is not None and after is not None
            old, new = before.resources[ROUTE].items, after.resources[ROUTE].items
            api = [n for n in new if "|api." in n]
            web = [n for n in new if "|web." in n]
            assert api and web
            assert all(new[n] is old[n] for n in api)
            assert all(new[n] is not old[n] for n in web)
            web_routes = routes_of("web")
            await change(store, sync, "web-2")  # a Workload: every service's routes kept
            assert routes_of("api") is api_routes and routes_of("web") is web_routes

    asyncio.run(run())


def test_a_workload_change_rebuilds_that_workloads_inbound_only() -> None:
    """A Workload change keeps the other workloads' inbound config (it depends on its own
    workload only) and rebuilds the changed one's: relabelled into a STRICT selector's
    reach, web-1 must refuse plaintext at once."""
    asyncio.run(replay(["strict-v2", "web-1-relabelled", "web-1-moved", "web-2",
                        "web-2-leaves"]))


def test_a_workload_change_recomputes_only_its_services_clusters_and_endpoints(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A workload joining web recomputes web's load assignments only: db's cluster and
    load assignment are the very objects they were, taken over without being rebuilt
    and compared (ADR 0037); web's has the new endpoint."""
    computed: list[str] = []
    assign = OutboundTable._network_assignment

    def spy(self: OutboundTable, ctx: GenerationContext, name: str, net: str,
            east_west: bool) -> Message:
        if net == ctx.mesh.config.network and not east_west:  # (not client-n1's view)
            computed.append(name)
        return assign(self, ctx, name, net, east_west)

    monkeypatch.setattr(OutboundTable, "_network_assignment", spy)

    async def run() -> None:
        async with mesh_sync(PROXIES) as (store, sync, cache):
            def outbound(t: str, name: str) -> Message:
                snap = cache.get("db-1.shop")
                assert snap is not None
                return snap.resources[t].items[name]

            db, web = "outbound|5432||db.shop.svc.cluster.local", \
                "outbound|8080||web.shop.svc.cluster.local"
            before = {(t, n): outbound(t, n) for t in (CLUSTER, ENDPOINT) for n in (db, web)}
            computed.clear()
            await change(store, sync, "web-2")
            assert computed and set(computed) <= {web, web.replace("||", "|v1|"),
                                                  web.replace("||", "|v2|")}
            for t in (CLUSTER, ENDPOINT):
                assert outbound(t, db) is before[t, db]
            addresses = {e.endpoint.address.socket_address.address
                         for loc in outbound(ENDPOINT, web).endpoints for e in loc.lb_endpoints}
            assert addresses == {"10.0.0.1", "10.0.0.3"}

    asyncio.run(run())
