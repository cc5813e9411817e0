"""Agent-registered workloads whose leases live in etcd, shared by every control plane.

Same interface and store layout as :class:`~shoal.registry.leases.WorkloadRegistry`
(an ordinary ``Workload`` resource annotated ``shoal.io/registered-by: agent``), but the
lease is an etcd lease the workload's key is attached to:

* ``register`` grants a lease of ``ttl`` seconds (or reuses the live one the key already
  has) and writes the workload attached to it.
* ``heartbeat`` renews that lease through any control-plane instance: the lease ID is
  read from the key, so the instance need not be the one the agent registered with.
* When a lease runs out, etcd itself deletes the key; every instance's watch sees the
  DELETE. ``expire_once``/``run`` have nothing to do and exist for the interface.
* etcd keeps leases across its own restarts and renews their TTL on a leader change, so
  a restart of etcd or of any control plane gives agents a grace period for free.
* An operator's edit of the workload keeps its lease (EtcdStore keeps a key's lease
  unless told otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import NotFound
from shoal.registry.leases import AGENT, REGISTERED_BY, agent_workload, store_registration
from shoal.store.etcd import EtcdStore
from shoal.store.etcd_client import LEASE_NOT_FOUND, EtcdError

log = logging.getLogger(__name__)


class EtcdWorkloadRegistry:
    def __init__(self, store: EtcdStore, *, ttl: float = 15.0) -> None:
        self._store = store
        self._ttl = ttl
        self._etcd_ttl = max(1, math.ceil(ttl))  # etcd leases are whole seconds

    @property
    def ttl(self) -> float:
        return self._ttl

    async def start(self) -> None:
        """Attach a fresh lease to stored agent workloads that have none (e.g. written
        by a registry that kept leases in memory)."""
        workloads, _ = await self._store.list(kind="Workload")
        attached = 0
        for wl in workloads:
            if wl.metadata.annotations.get(REGISTERED_BY) != AGENT:
                continue
            try:
                if await self._store.lease_of(wl.key) == 0:
                    await self._attach(wl.key)
                    attached += 1
            except NotFound:
                continue
        log.info("registry started", extra={"leases": attached, "lease_store": "etcd"})

    async def register(self, workload: Resource, service: Resource | None = None, *,
                       expect: Mapping[ResourceKey, int] | None = None) -> Resource:
        """Store the workload (and its service, if none of that name exists yet)."""
        workload = agent_workload(workload, service)
        lease = await self._live_lease(workload.key) or await self._grant()
        await store_registration(self._store, workload, service, expect,
                                 leases={workload.key: lease})
        log.info("workload registered", extra={"workload": str(workload.key), "lease": lease})
        return await self._store.get(workload.key)

    async def heartbeat(self, namespace: str, name: str) -> float:
        """Renew a lease; NotFound tells the agent to register again."""
        key = ResourceKey("Workload", namespace, name)
        lease = await self._store.lease_of(key)  # NotFound: expired or deleted
        if lease == 0 or await self._store.client.lease_keepalive(lease) <= 0:
            await self._attach(key)  # detached by hand, or expired a moment ago
        return self._ttl

    async def deregister(self, namespace: str, name: str, *, revision: int | None = None
                         ) -> None:
        key = ResourceKey("Workload", namespace, name)
        lease = await self._store.lease_of(key)
        await self._store.delete([key], expect=None if revision is None else {key: revision})
        if lease:
            await self._revoke(lease)
        log.info("workload deregistered", extra={"workload": str(key)})

    async def expire_once(self) -> list[ResourceKey]:
        return []  # etcd deletes a workload when its lease runs out

    async def run(self) -> None:
        await asyncio.Event().wait()

    # ------------------------------------------------------------------ leases

    async def _grant(self) -> int:
        return await self._store.client.lease_grant(self._etcd_ttl)

    async def _revoke(self, lease: int) -> None:
        try:
            await self._store.client.lease_revoke(lease)
        except EtcdError as e:
            if e.code != LEASE_NOT_FOUND:  # already expired: nothing to revoke
                raise

    async def _live_lease(self, key: ResourceKey) -> int:
        try:
            lease = await self._store.lease_of(key)
        except NotFound:
            return 0
        if lease and await self._store.client.lease_keepalive(lease) > 0:
            return lease
        return 0

    async def _attach(self, key: ResourceKey) -> None:
        current = await self._store.get(key)
        await self._store.apply([current], leases={key: await self._grant()})
