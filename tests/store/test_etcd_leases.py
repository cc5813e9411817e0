"""Workload leases in etcd: any control-plane instance renews, etcd expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.errors import NotFound
from shoal.registry.etcd_leases import EtcdWorkloadRegistry
from shoal.registry.leases import REGISTERED_BY
from shoal.store import EventType
from shoal.store.etcd import EtcdStore
from shoal.testing.etcd import ETCD, SKIP_REASON, EtcdServer

pytestmark = pytest.mark.skipif(ETCD is None, reason=SKIP_REASON)

KEY = ResourceKey("Workload", "default", "w1")


def workload(port: int = 8080) -> Resource:
    return Resource(
        api_version="test.shoal.io/v1",
        kind="Workload",
        metadata=Metadata(name="w1"),
        spec={"address": "10.0.0.1", "port": port},
    )


def service() -> Resource:
    return Resource(
        api_version="test.shoal.io/v1", kind="Service", metadata=Metadata(name="s"), spec={}
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path / "etcd")
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def stores(server: EtcdServer) -> AsyncIterator[tuple[EtcdStore, EtcdStore]]:
    a, b = EtcdStore([server.url]), EtcdStore([server.url])
    yield a, b
    await a.close()
    await b.close()


async def gone(store: EtcdStore, key: ResourceKey, within: float) -> bool:
    async with asyncio.timeout(within):
        while True:
            try:
                await store.get(key)
            except NotFound:
                return True
            await asyncio.sleep(0.1)


async def test_register_on_one_instance_renew_on_another(
    stores: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = stores
    first, second = EtcdWorkloadRegistry(a, ttl=1), EtcdWorkloadRegistry(b, ttl=1)
    stored = await first.register(workload(), service())
    assert stored.metadata.annotations[REGISTERED_BY] == "agent"
    assert (await b.get(ResourceKey("Service", "default", "s"))).kind == "Service"
    for _ in range(8):  # 2.4 s, well past the 1 s TTL
        await asyncio.sleep(0.3)
        assert await second.heartbeat("default", "w1") == 1
    assert (await a.get(KEY)).spec["port"] == 8080


async def test_an_expired_lease_deletes_the_workload_everywhere(
    stores: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = stores
    watch = b.watch(since=await b.revision(), kind="Workload")
    await EtcdWorkloadRegistry(a, ttl=1).register(workload())
    async with asyncio.timeout(10):
        events = [await anext(watch), await anext(watch)]
    assert [e.type for e in events] == [EventType.PUT, EventType.DELETE]
    assert events[1].resource.key == KEY
    with pytest.raises(NotFound):  # the agent is told to register again
        await EtcdWorkloadRegistry(b, ttl=1).heartbeat("default", "w1")
    await watch.aclose()


async def test_reregistering_and_operator_edits_keep_one_lease(
    stores: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = stores
    registry = EtcdWorkloadRegistry(a, ttl=2)
    await registry.register(workload())
    lease = await a.lease_of(KEY)
    assert lease != 0
    await EtcdWorkloadRegistry(b, ttl=2).register(workload(port=9090))
    assert await a.lease_of(KEY) == lease
    edited = (await b.get(KEY)).model_copy(update={"spec": {"address": "10.0.0.2"}})
    await b.apply([edited])  # a plain apply keeps the key's lease
    assert await a.lease_of(KEY) == lease
    assert await gone(a, KEY, within=8)


async def test_deregister_deletes_and_revokes(stores: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = stores
    registry = EtcdWorkloadRegistry(a, ttl=5)
    await registry.register(workload())
    lease = await a.lease_of(KEY)
    await EtcdWorkloadRegistry(b, ttl=5).deregister("default", "w1")
    with pytest.raises(NotFound):
        await a.get(KEY)
    assert await a.client.lease_keepalive(lease) <= 0


async def test_start_attaches_leases_to_unleased_agent_workloads(
    stores: tuple[EtcdStore, EtcdStore],
) -> None:
    a, _ = stores
    meta = Metadata(name="w1", annotations={REGISTERED_BY: "agent"})
    await a.apply([workload().model_copy(update={"metadata": meta})])  # e.g. migrated
    assert await a.lease_of(KEY) == 0
    await EtcdWorkloadRegistry(a, ttl=1).start()
    assert await a.lease_of(KEY) != 0
    assert await gone(a, KEY, within=8)
