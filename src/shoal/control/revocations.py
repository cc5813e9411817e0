"""Revoked token ids, followed from the store (kind TokenRevocation in the root namespace).

Every control plane sharing the store (etcd in HA) follows the same revocations, and a
restart keeps them (SQLite). ``revoked`` is a set look-up: tokens are checked on every
use without I/O. Until the first list has loaded, every token counts as revoked
(fail closed) — the control plane does not serve before that.
"""

from __future__ import annotations

import asyncio
import logging

from shoal.store.base import EventType, Store

KIND = "TokenRevocation"
log = logging.getLogger(__name__)


class RevocationIndex:
    def __init__(self, store: Store, root_namespace: str):
        self._store = store
        self._root = root_namespace
        self._ids: set[str] = set()
        self.ready = asyncio.Event()

    def revoked(self, jti: str) -> bool:
        return not self.ready.is_set() or jti in self._ids

    async def load(self) -> int:
        items, revision = await self._store.list(KIND, self._root)
        self._ids = {r.metadata.name for r in items}
        self.ready.set()
        return revision

    async def run(self, since: int | None = None) -> None:
        """Follow the store for ever (``since``: the revision ``load`` returned)."""
        revision = since if since is not None else await self.load()
        async for event in self._store.watch(since=revision, kind=KIND):
            if event.key.namespace != self._root:
                continue  # revocations count only where the mesh admin keeps them
            if event.type is EventType.PUT:
                self._ids.add(event.key.name)
                log.info("token revoked", extra={"token_id": event.key.name})
            else:
                self._ids.discard(event.key.name)
