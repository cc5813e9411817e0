"""The local store plus every remote cluster, as one store for the sync loop.

The sync loop builds the mesh view (and so every proxy's config) from a store's
``list`` + ``watch``. :class:`ClusterView` is that store for a multi-cluster control
plane: reads give the local resources as this control plane sees them (workloads with
their cluster/network labels, :func:`labels.local_view`) merged with the resources of
each remote cluster (:func:`labels.remote_view`, pushed in by :mod:`.remote`). Remote
resources are never written to the local store: they live here, in memory.

Merging: a local resource wins over a remote one with the same key (a Service defined in
both clusters is ours), and among remote clusters the first by name wins. Remote
workloads have cluster-qualified names, so they never collide.

Events for remote changes carry the local store's current revision (the mesh revision
stays the local store's). Writes go to the local store. One watcher at a time (the sync
loop); other readers may ``list``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import StoreError
from shoal.multicluster.labels import local_view
from shoal.store.base import ApplyResult, Event, EventType, Store


class ClusterView:
    def __init__(self, local: Store, *, cluster: str = "", network: str = ""):
        self._store = local
        self._cluster = cluster
        self._network = network
        self._local: dict[ResourceKey, Resource] = {}
        self._remote: dict[str, dict[ResourceKey, Resource]] = {}  # cluster -> its view
        self._emitted: dict[ResourceKey, Resource] = {}  # what the watcher has been given
        self._dirty: set[ResourceKey] = set()  # keys remote changes may have changed
        self._wake = asyncio.Event()
        self._revision = 0
        self._watching = False

    # -- remote clusters (called by the remote watchers) ----------------------------------

    def replace_remote(self, cluster: str, resources: Mapping[ResourceKey, Resource]) -> None:
        """The whole current view of remote ``cluster`` (empty: forget it)."""
        old = self._remote.get(cluster, {})
        new = dict(resources)
        self._dirty |= {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        if new:
            self._remote[cluster] = new
        else:
            self._remote.pop(cluster, None)
        if self._dirty:
            self._wake.set()

    def remote_resources(self, cluster: str) -> list[Resource]:
        return sorted(self._remote.get(cluster, {}).values(), key=lambda r: r.key)

    # -- merging --------------------------------------------------------------------------

    def _view(self, resource: Resource) -> Resource:
        return local_view(resource, self._cluster, self._network)

    def _effective(self, key: ResourceKey) -> Resource | None:
        if key in self._local:
            return self._view(self._local[key])
        for cluster in sorted(self._remote):
            if key in self._remote[cluster]:
                return self._remote[cluster][key]
        return None

    def _all_keys(self) -> set[ResourceKey]:
        keys = set(self._local)
        for resources in self._remote.values():
            keys |= resources.keys()
        return keys

    def _diff(self, keys: Iterable[ResourceKey]) -> list[Event]:
        out = []
        for key in sorted(keys):
            old, new = self._emitted.get(key), self._effective(key)
            if new == old:
                continue
            if new is not None:
                self._emitted[key] = new
                out.append(Event(EventType.PUT, key, new, self._revision))
            else:
                assert old is not None
                del self._emitted[key]
                out.append(Event(EventType.DELETE, key, old, self._revision))
        return out

    # -- Store: reads ---------------------------------------------------------------------

    async def list(self, kind: str | None = None, namespace: str | None = None
                   ) -> tuple[list[Resource], int]:
        resources, revision = await self._store.list()
        if kind is None and namespace is None and not self._watching:
            # the watcher (re-)lists: its state starts here
            self._local = {r.key: r for r in resources}
            self._revision = revision
            self._emitted = {k: r for k in self._all_keys()
                             if (r := self._effective(k)) is not None}
            self._dirty.clear()
            return sorted(self._emitted.values(), key=lambda r: r.key), revision
        # any other read: fresh local resources + remote ones, no state changes
        local = {r.key: self._view(r) for r in resources}
        merged: dict[ResourceKey, Resource] = {}
        for cluster in sorted(self._remote, reverse=True):  # first cluster by name wins
            merged |= self._remote[cluster]
        merged |= local
        return sorted((r for r in merged.values() if (kind is None or r.kind == kind) and (
            namespace is None or r.metadata.namespace == namespace)),
            key=lambda r: r.key), revision

    async def watch(self, *, since: int | None = None, kind: str | None = None
                    ) -> AsyncGenerator[Event, None]:
        if self._watching:
            raise StoreError("a ClusterView has one watcher (the sync loop)")
        self._watching = True
        events = self._store.watch(since=since)
        next_local: asyncio.Future[Event] = asyncio.ensure_future(anext(events))
        try:
            while True:
                if not self._dirty:
                    wake = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({next_local, wake}, return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                out: list[Event] = []
                if next_local.done():
                    event = next_local.result()  # WatchExpired etc. reach the caller
                    next_local = asyncio.ensure_future(anext(events))
                    self._revision = event.revision
                    if event.type is EventType.PUT:
                        self._local[event.key] = event.resource
                    else:
                        self._local.pop(event.key, None)
                    out += self._diff([event.key])
                if self._dirty:
                    keys, self._dirty = self._dirty, set()
                    self._wake.clear()
                    out += self._diff(keys)
                for e in out:
                    if kind is None or e.key.kind == kind:
                        yield e
        finally:
            self._watching = False
            next_local.cancel()
            with contextlib.suppress(BaseException):
                await next_local
            await events.aclose()

    # -- Store: everything else is the local store's --------------------------------------

    async def get(self, key: ResourceKey) -> Resource:
        return await self._store.get(key)

    async def apply(self, resources: Sequence[Resource], *,
                    expect: Mapping[ResourceKey, int] | None = None) -> ApplyResult:
        return await self._store.apply(resources, expect=expect)

    async def delete(self, keys: Sequence[ResourceKey], *,
                     expect: Mapping[ResourceKey, int] | None = None) -> int:
        return await self._store.delete(keys, expect=expect)

    async def revision(self) -> int:
        return await self._store.revision()

    async def compact(self, revision: int) -> None:
        await self._store.compact(revision)

    async def close(self) -> None:
        """Nothing: the local store belongs to whoever opened it."""
