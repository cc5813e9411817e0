"""Where the rate-limit service's rules come from: the control plane's store when it runs
inside the control plane, or the control plane's REST watch when it runs on its own
(``GET /api/v1/resources?kind=RateLimitPolicy`` then ``GET /api/v1/watch?since=&kind=``,
reconnecting with back-off and re-listing after a disconnect)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable

import aiohttp

from shoal.api import load_resource
from shoal.api.meta import Resource, ResourceKey
from shoal.ratelimit.descriptors import DescriptorTable
from shoal.ratelimit.rules import KIND, RuleTable
from shoal.store.base import EventType, Store

log = logging.getLogger(__name__)


class FixedRules:
    """Rules from files read at start (``--descriptors``): ready at once, never change."""

    def __init__(self, table: DescriptorTable) -> None:
        self.table = table
        self.ready = asyncio.Event()
        self.ready.set()
        self.revision = 0

    def __call__(self) -> DescriptorTable:
        return self.table


class RuleSource:
    """Holds the current :class:`RuleTable`; ``ready`` is set after the first load."""

    def __init__(self) -> None:
        self._policies: dict[ResourceKey, Resource] = {}
        self.table = RuleTable({})
        self.ready = asyncio.Event()
        self.revision = 0

    def __call__(self) -> RuleTable:
        return self.table

    def _reset(self, policies: Iterable[Resource], revision: int) -> None:
        self._policies = {p.key: p for p in policies}
        self._rebuild(revision)

    def _rebuild(self, revision: int) -> None:
        self.table = RuleTable.build(self._policies.values())
        self.revision = revision
        self.ready.set()
        log.info("rate-limit rules loaded", extra={"rules": len(self.table.rules),
                                                   "revision": revision})

    def _event(self, put: bool, resource: Resource, revision: int) -> None:
        if put:
            self._policies[resource.key] = resource
        else:
            self._policies.pop(resource.key, None)
        self._rebuild(revision)

    async def follow_store(self, store: Store) -> None:
        items, revision = await store.list(KIND)
        self._reset(items, revision)
        async for event in store.watch(since=revision, kind=KIND):
            self._event(event.type is EventType.PUT, event.resource, event.revision)

    async def follow_rest(self, url: str, retry: float = 1.0,
                          credential: Callable[[], str | None] = lambda: None) -> None:
        """Forever: list, then watch; on any error wait ``retry`` s and start again.
        ``credential``: the operator token to present (looked up on each connect; it
        needs the view role where RateLimitPolicies live)."""
        api = url.rstrip("/") + "/api/v1"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        while True:
            try:
                token = credential()
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
                    async with http.get(f"{api}/resources", params={"kind": KIND}) as r:
                        r.raise_for_status()
                        body = await r.json()
                    self._reset([load_resource(d) for d in body["items"]], body["revision"])
                    params = {"kind": KIND, "since": str(body["revision"])}
                    async with http.get(f"{api}/watch", params=params) as r:
                        r.raise_for_status()
                        async for line in r.content:
                            if line.strip():
                                ev = json.loads(line)
                                self._event(ev["type"] == EventType.PUT.value,
                                            load_resource(ev["resource"]), ev["revision"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("rate-limit rules: control plane watch failed; retrying",
                            extra={"error": str(e)})
            await asyncio.sleep(retry)
