"""Workloads registered by agents, kept alive by heartbeats.

A registered workload is an ordinary ``Workload`` resource in the config store (so it
survives a control-plane restart and every sidecar keeps its endpoints), annotated as
agent-registered. Liveness is a lease held in memory: each heartbeat renews it, and a
workload whose lease runs out is deleted from the store. After a restart every stored
agent workload gets a fresh lease, i.e. one TTL of grace for its agent to heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import Conflict, NotFound, ValidationError, Violation
from shoal.store.base import Store

log = logging.getLogger(__name__)

REGISTERED_BY = "shoal.io/registered-by"
AGENT = "agent"


def agent_workload(workload: Resource, service: Resource | None) -> Resource:
    """Check a registration and mark the workload as agent-registered."""
    problems = []
    if workload.kind != "Workload":
        problems.append(Violation("workload.kind", "must be Workload"))
    if service is not None and service.kind != "Service":
        problems.append(Violation("service.kind", "must be Service"))
    if problems:
        raise ValidationError(problems)
    annotations = {**workload.metadata.annotations, REGISTERED_BY: AGENT}
    meta = workload.metadata.model_copy(update={"annotations": annotations})
    return workload.model_copy(update={"metadata": meta})


class Registry(Protocol):
    """What the control plane needs from a workload registry (in-memory leases here;
    etcd leases in :mod:`shoal.registry.etcd_leases`, shared by every instance)."""

    @property
    def ttl(self) -> float: ...

    async def start(self) -> None: ...

    async def register(self, workload: Resource, service: Resource | None = None, *,
                       expect: Mapping[ResourceKey, int] | None = None) -> Resource:
        """``expect``: store revisions the caller's decision read (Conflict if changed)."""
        ...

    async def heartbeat(self, namespace: str, name: str) -> float: ...

    async def deregister(self, namespace: str, name: str, *, revision: int | None = None
                         ) -> None:
        """``revision``: delete only the workload as stored at that revision (Conflict)."""
        ...

    async def expire_once(self) -> list[ResourceKey]:
        """Delete the workloads whose lease has run out (their names are free again)."""
        ...

    async def run(self) -> None: ...


async def store_registration(store: Store, workload: Resource, service: Resource | None,
                             expect: Mapping[ResourceKey, int] | None,
                             leases: Mapping[ResourceKey, int] | None = None) -> None:
    """Write the workload (and its service, if none of that name exists yet: never
    overwrite an operator's Service), checking ``expect`` on both attempts."""
    guard = dict(expect or {})
    kw = {"leases": leases} if leases is not None else {}
    if service is not None:
        try:
            await store.apply([workload, service], expect={**guard, service.key: 0}, **kw)
            return
        except Conflict:
            pass  # the service exists (or the guard failed: the next write says so)
    await store.apply([workload], expect=guard, **kw)


class WorkloadRegistry:
    def __init__(self, store: Store, *, ttl: float = 15.0,
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._leases: dict[ResourceKey, float] = {}  # key -> deadline

    @property
    def ttl(self) -> float:
        return self._ttl

    async def start(self) -> None:
        """Give every stored agent workload a fresh lease (grace after a restart)."""
        workloads, _ = await self._store.list(kind="Workload")
        deadline = self._clock() + self._ttl
        for wl in workloads:
            if wl.metadata.annotations.get(REGISTERED_BY) == AGENT:
                self._leases[wl.key] = deadline
        log.info("registry started", extra={"leases": len(self._leases)})

    async def register(self, workload: Resource, service: Resource | None = None, *,
                       expect: Mapping[ResourceKey, int] | None = None) -> Resource:
        """Store the workload (and its service, if none of that name exists yet)."""
        workload = agent_workload(workload, service)
        await store_registration(self._store, workload, service, expect)
        self._leases[workload.key] = self._clock() + self._ttl
        log.info("workload registered", extra={"workload": str(workload.key)})
        return await self._store.get(workload.key)

    async def heartbeat(self, namespace: str, name: str) -> float:
        """Renew a lease; NotFound tells the agent to register again."""
        key = ResourceKey("Workload", namespace, name)
        if key not in self._leases:
            raise NotFound(f"workload {namespace}/{name} is not registered")
        try:
            await self._store.get(key)  # an operator may have deleted it
        except NotFound:
            self._leases.pop(key, None)
            raise
        self._leases[key] = self._clock() + self._ttl
        return self._ttl

    async def deregister(self, namespace: str, name: str, *, revision: int | None = None
                         ) -> None:
        key = ResourceKey("Workload", namespace, name)
        try:
            await self._store.delete([key],
                                     expect=None if revision is None else {key: revision})
        except NotFound:
            self._leases.pop(key, None)
            raise
        self._leases.pop(key, None)  # not on Conflict: the name is someone else's now
        log.info("workload deregistered", extra={"workload": str(key)})

    async def expire_once(self) -> list[ResourceKey]:
        now = self._clock()
        expired = [k for k, deadline in self._leases.items() if deadline < now]
        for key in expired:
            self._leases.pop(key, None)
            with contextlib.suppress(NotFound):
                await self._store.delete([key])
            log.warning("workload lease expired", extra={"workload": str(key)})
        return expired

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(self._ttl / 3, 0.05))
            await self.expire_once()
