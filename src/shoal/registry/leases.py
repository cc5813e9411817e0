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
from collections.abc import Callable
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

    async def register(self, workload: Resource, service: Resource | None = None
                       ) -> Resource: ...

    async def heartbeat(self, namespace: str, name: str) -> float: ...

    async def deregister(self, namespace: str, name: str) -> None: ...

    async def run(self) -> None: ...


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

    async def register(self, workload: Resource, service: Resource | None = None) -> Resource:
        """Store the workload (and its service, if none of that name exists yet)."""
        workload = agent_workload(workload, service)
        batch = [workload]
        expect = {}
        if service is not None:
            batch.append(service)
            expect[service.key] = 0  # create only; never overwrite an operator's Service
        try:
            await self._store.apply(batch, expect=expect)
        except Conflict:
            await self._store.apply([workload])
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

    async def deregister(self, namespace: str, name: str) -> None:
        key = ResourceKey("Workload", namespace, name)
        self._leases.pop(key, None)
        await self._store.delete([key])
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
