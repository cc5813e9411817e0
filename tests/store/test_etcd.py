"""What only the etcd store promises: shared state between instances, resumable watches."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.errors import Conflict, StoreError, ValidationError, WatchExpired
from shoal.store import Event, EventType
from shoal.store.etcd import EtcdStore
from shoal.store.etcd_client import EtcdClient, b64
from shoal.testing.etcd import ETCD, SKIP_REASON, EtcdServer

pytestmark = pytest.mark.skipif(ETCD is None, reason=SKIP_REASON)


def res(name: str, **spec: Any) -> Resource:
    return Resource(
        api_version="test.shoal.io/v1",
        kind="Thing",
        metadata=Metadata(name=name),
        spec=spec or {"v": 1},
    )


def key(name: str) -> ResourceKey:
    return ResourceKey("Thing", "default", name)


async def take(events: AsyncIterator[Event], n: int, timeout: float = 15) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):  # turns a hang into a failure
        async for e in events:
            out.append(e)
            if len(out) == n:
                break
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path / "etcd")
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def pair(server: EtcdServer) -> AsyncIterator[tuple[EtcdStore, EtcdStore]]:
    """Two stores on one etcd: two control-plane instances."""
    a, b = EtcdStore([server.url]), EtcdStore(server.url)
    yield a, b
    await a.close()
    await b.close()


async def test_a_write_through_one_instance_is_watched_by_the_other(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    watch = b.watch(since=await b.revision())
    await a.apply([res("x"), res("y")])
    await a.delete([key("x")])
    events = await take(watch, 3)
    assert [(e.type, e.key, e.revision) for e in events] == [
        (EventType.PUT, key("x"), 1),
        (EventType.PUT, key("y"), 1),
        (EventType.DELETE, key("x"), 2),
    ]
    assert (await b.get(key("y"))).revision == 1
    assert [r.key for r in (await b.list())[0]] == [key("y")]
    await watch.aclose()


async def test_concurrent_batches_from_two_instances_stay_atomic(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    watch = a.watch(since=0)

    async def writer(store: EtcdStore, tag: str) -> None:
        for i in range(15):
            await store.apply([res("p", w=f"{tag}{i}"), res("q", w=f"{tag}{i}")])

    await asyncio.gather(writer(a, "a"), writer(b, "b"))
    events = await take(watch, 60)  # 30 batches of two, each batch its own revision
    by_revision: dict[int, list[Event]] = {}
    for e in events:
        by_revision.setdefault(e.revision, []).append(e)
    assert len(by_revision) == 30
    for batch in by_revision.values():
        assert [e.key for e in batch] == [key("p"), key("q")]
        assert batch[0].resource.spec == batch[1].resource.spec
    assert (await a.get(key("p"))).spec == (await b.get(key("q"))).spec
    await watch.aclose()


async def test_expect_decides_between_two_instances(pair: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = pair
    rev = (await a.apply([res("x")])).revision
    await a.apply([res("x", v=2)], expect={key("x"): rev})
    with pytest.raises(Conflict):
        await b.apply([res("x", v=3)], expect={key("x"): rev})
    assert (await b.get(key("x"))).spec == {"v": 2}


async def test_watch_resumes_across_an_etcd_restart(server: EtcdServer) -> None:
    store = EtcdStore([server.url])
    try:
        watch = store.watch(since=0)
        await store.apply([res("before")])
        assert [e.revision for e in await take(watch, 1)] == [1]
        await asyncio.to_thread(server.stop)
        pending = asyncio.create_task(take(watch, 4, timeout=30))
        await asyncio.sleep(0.3)  # the watcher notices and retries while etcd is down
        with pytest.raises(StoreError):
            await store.get(key("before"))
        await asyncio.to_thread(server.start)
        writer = EtcdStore([server.url])  # another instance writes right away
        for name in ("r1", "r2", "r3"):
            await writer.apply([res(name)])
        await writer.delete([key("before")])
        events = await pending
        assert [(e.type, e.revision) for e in events] == [
            (EventType.PUT, 2),
            (EventType.PUT, 3),
            (EventType.PUT, 4),
            (EventType.DELETE, 5),
        ]
        await writer.close()
        await watch.aclose()
    finally:
        await store.close()


async def test_compaction_by_another_instance_expires_old_watches(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    for i in range(5):
        await a.apply([res(f"r{i}")])
    await a.delete([key("r0")])  # revision 6: a delete exactly at the compaction point
    await a.compact(6)
    with pytest.raises(WatchExpired):
        await take(b.watch(since=5), 1)
    await a.apply([res("late")])
    assert [e.revision for e in await take(b.watch(since=6), 1)] == [7]


async def test_history_compacted_under_a_stopped_watch_expires_it(server: EtcdServer) -> None:
    a, b = EtcdStore([server.url]), EtcdStore([server.url])
    try:
        watch = b.watch(since=0)
        await a.apply([res("x")])
        assert [e.revision for e in await take(watch, 1)] == [1]
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        for i in range(3):
            await a.apply([res("x", v=i + 2)])
        await a.compact(3)  # the watcher reconnects from revision 1: gone
        with pytest.raises(WatchExpired):
            await take(watch, 3, timeout=30)
    finally:
        await a.close()
        await b.close()


async def test_revisions_increase_but_need_not_be_dense(server: EtcdServer) -> None:
    store, other = EtcdStore([server.url]), EtcdStore([server.url], prefix="/other/")
    raw = EtcdClient([server.url])
    try:
        assert (await store.apply([res("a")])).revision == 1
        await raw.txn([], [{"request_put": {"key": b64(b"/elsewhere"), "value": b64(b"x")}}])
        await other.apply([res("a")])
        assert (await store.apply([res("b")])).revision == 4
        assert [r.key for r in (await store.list())[0]] == [key("a"), key("b")]
        assert [e.revision for e in await take(store.watch(since=0), 2)] == [1, 4]
    finally:
        await store.close()
        await other.close()
        await raw.aclose()


async def test_unreachable_etcd_is_a_store_error() -> None:
    store = EtcdStore(["http://127.0.0.1:9"])  # discard port: nothing listens
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await store.revision()
    finally:
        await store.close()


def test_prefix_must_end_with_a_slash() -> None:
    with pytest.raises(StoreError):
        EtcdStore(["http://127.0.0.1:2379"], prefix="/shoal")


def test_the_test_etcd_moves_to_new_ports_when_its_port_was_taken(tmp_path: Path) -> None:
    """The helper picks free ports before etcd binds them; when another process takes one
    in between (it happened in CI), it starts again on new ports instead of failing."""
    s = EtcdServer(tmp_path / "etcd")
    taken = s.client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        s.start()
        try:
            assert s.client_port != taken and str(s.client_port) in s.url
            assert asyncio.run(EtcdStore([s.url]).list())[0] == []
        finally:
            s.stop()


async def test_a_write_larger_than_one_etcd_request_is_refused_whole(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    """One apply is one etcd txn (all or nothing): more resources than etcd's
    --max-txn-ops, or more bytes than its --max-request-bytes, are refused with a
    ValidationError (the API's 422) naming the limit, and nothing is stored."""
    a, _ = pair
    with pytest.raises(ValidationError, match="at most 128 at once"):
        await a.apply([res(f"n{i}") for i in range(129)])
    big = "x" * 100_000
    with pytest.raises(ValidationError, match="--max-request-bytes"):
        await a.apply([res(f"b{i}", blob=big) for i in range(20)])  # ~2 MB
    assert (await a.list())[0] == []
    await a.apply([res(f"n{i}") for i in range(128)])  # at the limit: taken
    assert len((await a.list())[0]) == 128


async def test_an_etcd_with_a_lower_request_limit_refuses_with_a_validation_error(
    tmp_path: Path,
) -> None:
    server = EtcdServer(tmp_path / "etcd", args=["--max-request-bytes=65536"])
    server.start()
    store = EtcdStore(server.url)
    try:
        with pytest.raises(ValidationError, match="etcd refused the write as too large"):
            await store.apply([res("big", blob="x" * 100_000)])
        assert (await store.list())[0] == []
    finally:
        await store.close()
        server.stop()
