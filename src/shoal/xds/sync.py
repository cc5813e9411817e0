"""Store events -> debounce -> recompute the affected proxies -> versioned snapshots.

The sync loop owns the control plane's view of the mesh (a :class:`MeshSnapshot` kept
current from the store's watch) and the set of connected proxies. It is the xDS
server's connection hook: a proxy that connects gets its snapshot computed at once from
the current mesh; later changes are batched (``debounce`` of quiet, at most
``max_delay`` after the first change) and only the proxies they can affect are
recomputed. The cache then pushes only the types whose content version changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import WatchExpired
from shoal.registry.snapshot import MeshConfig, MeshSnapshot, services_of_workloads
from shoal.store.base import EventType, Store
from shoal.xds.cache import SnapshotCache
from shoal.xds.generate import GenerationContext, generate, outbound
from shoal.xds.types import Proxy, ProxySnapshot

log = logging.getLogger(__name__)

# Kinds no proxy's config depends on. A Workload change affects only its own proxy unless
# it is (or was) a member of a service, and then only the proxies whose Sidecar scope sees
# that service. Every other kind -- routing, security policy, kinds added later -- affects
# every proxy: a new kind is pushed to everyone by default rather than silently to no one.
NOT_PROXY_CONFIG = frozenset({"ServiceLevelObjective"})
# Proxies computed between two yields to the event loop during a push.
YIELD_EVERY = 50


@dataclass
class SyncStats:
    pushes: int = 0  # recompute rounds
    proxies_computed: int = 0
    last_revision: int = 0  # the store revision every proxy's snapshot reflects (pushed)
    last_compute_seconds: float = 0.0


class Sync:
    def __init__(
        self,
        store: Store,
        cache: SnapshotCache,
        *,
        mesh_config: MeshConfig | None = None,
        debounce: float = 0.05,
        max_delay: float = 0.5,
        generator: Callable[[GenerationContext, Proxy], ProxySnapshot] = generate,
    ):
        self._store = store
        self._cache = cache
        self._config = mesh_config or MeshConfig()
        self._debounce = debounce
        self._max_delay = max_delay
        self._generate = generator
        self._resources: dict[ResourceKey, Resource] = {}
        self._revision = 0
        self._ctx: GenerationContext | None = None
        self._proxies: dict[str, Proxy] = {}
        self._connections: dict[str, int] = {}
        self._pending: set[ResourceKey] = set()
        self._changed = asyncio.Event()
        self.stats = SyncStats()

    # -- the mesh view ----------------------------------------------------------------------

    @property
    def mesh(self) -> MeshSnapshot:
        return self._context().mesh

    def _context(self, previous: GenerationContext | None = None,
                 changed: set[ResourceKey] | None = None) -> GenerationContext:
        """The context of the current mesh; ``previous`` and the ``changed`` keys let it
        keep what the change cannot have touched (GenerationContext)."""
        if self._ctx is None:
            mesh = MeshSnapshot.of(self._resources, self._revision, self._config)
            kinds = frozenset(k.kind for k in changed) if changed is not None else None
            workloads = (frozenset((k.namespace, k.name) for k in changed
                                   if k.kind == "Workload") if changed is not None else None)
            self._ctx = GenerationContext(mesh, previous, kinds, workloads)
        return self._ctx

    async def _relist(self) -> int:
        resources, revision = await self._store.list()
        old = self._resources
        self._resources = {r.key: r for r in resources}
        self._revision = revision
        self._pending |= {
            k for k in old.keys() | self._resources.keys() if old.get(k) != self._resources.get(k)
        }
        self._ctx = None
        return revision

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow the store until cancelled. ``ready`` is set once the mesh is loaded."""
        revision = await self._relist()
        self._pending.clear()
        # Proxies connecting from now on get this revision's config (computed on connect).
        self.stats.last_revision = revision
        if ready is not None:
            ready.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._push_loop())
            while True:
                try:
                    async for event in self._store.watch(since=revision):
                        if event.type is EventType.PUT:
                            self._resources[event.key] = event.resource
                        else:
                            self._resources.pop(event.key, None)
                        revision = self._revision = event.revision
                        self._pending.add(event.key)
                        self._changed.set()
                except WatchExpired:
                    log.warning("store history compacted under the watch; re-listing")
                    revision = await self._relist()
                    self._changed.set()

    async def _push_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            first = loop.time()
            # Debounce: wait for a quiet period, but never longer than max_delay.
            while True:
                self._changed.clear()
                remaining = self._max_delay - (loop.time() - first)
                if remaining <= 0:
                    break
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation that arrives as the event is set, and this loop would then
                # wait for ever (the control plane hung on shutdown)
                try:
                    async with asyncio.timeout(min(self._debounce, remaining)):
                        await self._changed.wait()
                except TimeoutError:
                    break
            self._changed.clear()
            await self.push_pending()

    async def push_pending(self) -> None:
        """Rebuild the mesh view and recompute every proxy the pending changes affect.

        Proxies are computed in batches, yielding to the event loop in between, so that
        streams start sending to the first proxies while the rest are being computed.
        """
        if not self._pending:
            return
        changed, self._pending = self._pending, set()
        previous = self._ctx
        self._ctx = None
        ctx = self._context(previous, changed)
        affected = self._affected(changed, previous, ctx)
        started = time.perf_counter()
        for i, node_id in enumerate(affected):
            self._compute(ctx, node_id)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        # Packed forms of resources no snapshot uses any more are garbage now; free them
        # once they add up (bounded by bytes, not left to pile up push after push).
        self._cache.maybe_sweep()
        self.stats.pushes += 1
        self.stats.last_revision = ctx.mesh.revision
        self.stats.last_compute_seconds = time.perf_counter() - started
        log.info("config pushed", extra={"revision": ctx.mesh.revision,
                                         "changed": len(changed), "proxies": len(affected)})

    def _affected(
        self, changed: set[ResourceKey], previous: GenerationContext | None,
        new: GenerationContext,
    ) -> list[str]:
        if any(k.kind not in NOT_PROXY_CONFIG and k.kind != "Workload" for k in changed):
            return list(self._proxies)
        old = previous.mesh if previous is not None else None
        if previous is not None and outbound.table(previous).east_west != outbound.table(
                new).east_west:
            # an east-west gateway came, went or moved: every proxy on another network
            # reaches every service of the gateway's network through it
            return list(self._proxies)
        workloads = {(k.namespace, k.name) for k in changed if k.kind == "Workload"}
        # Services whose endpoints the change touches, as they were and as they are.
        touched = services_of_workloads((old, new.mesh), workloads)
        own = [nid for nid, p in self._proxies.items() if (p.namespace, p.workload) in workloads]
        if not touched:
            return own
        # A proxy is affected if its Sidecar lets it see one of those services (no Sidecar:
        # it sees the whole mesh). This keeps endpoint churn from recomputing proxies that
        # were scoped away from it (issue 4: Sidecar keeps push cost flat).
        if not new.mesh.of_kind("Sidecar"):
            # nobody is scoped: every proxy sees them (and this runs before the first
            # proxy is computed: a scope per proxy was 13 ms at 5,000 proxies, in process)
            return list(self._proxies)
        affected = set(own)
        sees: dict[tuple[str, str], bool] = {}  # per workload: proxies of one share a scope
        for nid, p in self._proxies.items():
            if nid in affected:
                continue
            hit = sees.get((p.namespace, p.workload))
            if hit is None:
                within = new.scope_of_proxy(p.namespace,
                                            new.mesh.workload(p.namespace, p.workload))
                hit = within.key is None or any(within.visible(m, svc) for m, svc in touched)
                sees[(p.namespace, p.workload)] = hit
            if hit:
                affected.add(nid)
        return [nid for nid in self._proxies if nid in affected]

    def _compute(self, ctx: GenerationContext, node_id: str) -> None:
        proxy = self._proxies.get(node_id)
        if proxy is None:
            return
        self._cache.set(node_id, self._generate(ctx, proxy))
        self.stats.proxies_computed += 1

    # -- xDS connection hooks ---------------------------------------------------------------

    async def proxy_connected(self, proxy: Proxy) -> None:
        self._proxies[proxy.node_id] = proxy
        self._connections[proxy.node_id] = self._connections.get(proxy.node_id, 0) + 1
        self._compute(self._context(), proxy.node_id)

    async def proxy_disconnected(self, node_id: str) -> None:
        left = self._connections.get(node_id, 0) - 1
        if left > 0:
            self._connections[node_id] = left
            return
        self._connections.pop(node_id, None)
        self._proxies.pop(node_id, None)
        self._cache.remove(node_id)

    @property
    def proxies(self) -> dict[str, Proxy]:
        return dict(self._proxies)
