"""The store contract, run against every implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.errors import Conflict, NotFound, StoreError, ValidationError, WatchExpired
from shoal.store import Event, EventType, MemoryStore, SqliteStore, Store
from shoal.store import base as store_base
from shoal.store.etcd import EtcdStore
from shoal.testing.etcd import ETCD, SKIP_REASON, EtcdServer


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self) -> None:
        self.now += timedelta(hours=1)


MakeStore = Callable[..., Store]


ETCD_PARAM = pytest.param("etcd", marks=pytest.mark.skipif(ETCD is None, reason=SKIP_REASON))


@pytest.fixture(params=["memory", "sqlite", ETCD_PARAM])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    server: EtcdServer | None = None
    if request.param == "etcd":  # a fresh etcd per test: revisions start at 0 and are dense
        server = EtcdServer(tmp_path / "etcd")
        server.start()

    def make(**kwargs: Any) -> Store:
        if request.param == "memory":
            return MemoryStore(**kwargs)
        if server is not None:
            return EtcdStore([server.url], **kwargs)
        return SqliteStore(tmp_path / "store.db", **kwargs)

    yield make
    if server is not None:
        server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(make_store: MakeStore, clock: FakeClock) -> AsyncIterator[Store]:
    s = make_store(clock=clock)
    yield s
    await s.close()


def res(name: str, kind: str = "Thing", ns: str = "default", **spec: Any) -> Resource:
    return Resource(
        api_version="test.shoal.io/v1",
        kind=kind,
        metadata=Metadata(name=name, namespace=ns),
        spec=spec or {"v": 1},
    )


def key(name: str, kind: str = "Thing", ns: str = "default") -> ResourceKey:
    return ResourceKey(kind, ns, name)


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    """The next n events (the timeout only turns a hang into a failure)."""
    out: list[Event] = []
    async with asyncio.timeout(10):
        async for e in events:
            out.append(e)
            if len(out) == n:
                break
    return out


# ------------------------------------------------------------------ apply / get


async def test_empty_store_is_at_revision_zero(store: Store) -> None:
    assert await store.revision() == 0
    assert await store.list() == ([], 0)


async def test_create_configure_unchanged(store: Store) -> None:
    r1 = await store.apply([res("a"), res("b")])
    assert r1.revision == 1
    assert r1.results == [(key("a"), "created"), (key("b"), "created")]

    r2 = await store.apply([res("a", v=2), res("b")])
    assert r2.revision == 2
    assert r2.results == [(key("a"), "configured"), (key("b"), "unchanged")]

    a, b = await store.get(key("a")), await store.get(key("b"))
    assert a.spec == {"v": 2} and a.metadata.resource_version == "2"
    assert b.metadata.resource_version == "1"


async def test_nothing_changed_means_no_new_revision(store: Store) -> None:
    await store.apply([res("a")])
    result = await store.apply([res("a")])
    assert result.revision == 1 and not result.changed
    assert result.results == [(key("a"), "unchanged")]
    assert await store.revision() == 1


async def test_labels_and_annotations_are_content(store: Store) -> None:
    await store.apply([res("a")])
    meta = Metadata(name="a", labels={"app": "x"})
    result = await store.apply([res("a").model_copy(update={"metadata": meta})])
    assert result.results == [(key("a"), "configured")]
    assert (await store.get(key("a"))).metadata.labels == {"app": "x"}


async def test_store_owned_fields_are_not_content(store: Store) -> None:
    await store.apply([res("a")])
    stored = await store.get(key("a"))
    stale = stored.with_revision(99)
    meta = stale.metadata.model_copy(update={"creation_timestamp": "1999-01-01T00:00:00Z"})
    result = await store.apply([stale.model_copy(update={"metadata": meta})])
    assert result.results == [(key("a"), "unchanged")]
    assert await store.get(key("a")) == stored


async def test_creation_timestamp_kept_from_first_create(
    store: Store, clock: FakeClock
) -> None:
    await store.apply([res("a")])
    created = (await store.get(key("a"))).metadata.creation_timestamp
    assert created == "2025-01-01T00:00:00Z"
    clock.advance()
    await store.apply([res("a", v=2)])
    assert (await store.get(key("a"))).metadata.creation_timestamp == created
    await store.delete([key("a")])
    await store.apply([res("a", v=3)])  # re-created: a new creation time
    assert (await store.get(key("a"))).metadata.creation_timestamp == "2025-01-01T01:00:00Z"


async def test_get_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get(key("nope"))


async def test_duplicate_keys_in_a_batch_are_rejected(store: Store) -> None:
    with pytest.raises(ValidationError):
        await store.apply([res("a"), res("a", v=2)])
    assert await store.revision() == 0


async def test_injected_loader_is_used(make_store: MakeStore) -> None:
    seen: list[str] = []

    def loads(doc: dict[str, Any]) -> Resource:
        seen.append(doc["metadata"]["name"])
        return Resource.model_validate(doc)

    s = make_store(loads=loads)
    try:
        await s.apply([res("a")])
        await s.get(key("a"))
        assert "a" in seen
    finally:
        await s.close()


# ------------------------------------------------------------------ optimistic concurrency


async def test_conflict_on_second_resource_stores_nothing(store: Store) -> None:
    await store.apply([res("b")])
    with pytest.raises(Conflict):
        await store.apply([res("a"), res("b", v=2)], expect={key("a"): 0, key("b"): 7})
    with pytest.raises(NotFound):
        await store.get(key("a"))
    assert (await store.get(key("b"))).spec == {"v": 1}
    assert await store.revision() == 1


async def test_expect_zero_means_must_not_exist(store: Store) -> None:
    await store.apply([res("a")], expect={key("a"): 0})
    with pytest.raises(Conflict):
        await store.apply([res("a", v=2)], expect={key("a"): 0})


async def test_expect_matching_revision_succeeds(store: Store) -> None:
    await store.apply([res("a")])
    await store.apply([res("b")])
    result = await store.apply([res("a", v=2)], expect={key("a"): 1})
    assert result.revision == 3
    with pytest.raises(Conflict):  # a is now at 3
        await store.apply([res("a", v=3)], expect={key("a"): 1})


async def test_expect_can_guard_a_key_outside_the_batch(store: Store) -> None:
    await store.apply([res("guard")])
    with pytest.raises(Conflict):
        await store.apply([res("a")], expect={key("guard"): 0})
    result = await store.apply([res("a")], expect={key("guard"): 1})
    assert result.results == [(key("a"), "created")]


# ------------------------------------------------------------------ delete


async def test_delete_is_one_revision(store: Store) -> None:
    await store.apply([res("a"), res("b"), res("c")])
    assert await store.delete([key("a"), key("b")]) == 2
    items, rev = await store.list()
    assert [r.metadata.name for r in items] == ["c"] and rev == 2


async def test_delete_missing_deletes_nothing(store: Store) -> None:
    await store.apply([res("a")])
    with pytest.raises(NotFound, match="nope"):
        await store.delete([key("a"), key("nope")])
    assert (await store.get(key("a"))).metadata.name == "a"
    assert await store.revision() == 1


async def test_delete_with_stale_expect_conflicts(store: Store) -> None:
    await store.apply([res("a")])
    await store.apply([res("a", v=2)])
    with pytest.raises(Conflict):
        await store.delete([key("a")], expect={key("a"): 1})
    assert await store.delete([key("a")], expect={key("a"): 2}) == 3


# ------------------------------------------------------------------ list


async def test_list_filters_and_sorts(store: Store) -> None:
    await store.apply(
        [
            res("z", ns="prod"),
            res("b"),
            res("a", kind="Other"),
            res("a"),
        ]
    )
    await store.apply([res("c", kind="Other", ns="prod")])

    def names(items: list[Resource]) -> list[str]:
        return [str(r.key) for r in items]

    items, rev = await store.list()
    assert rev == 2
    assert names(items) == [
        "Other default/a",
        "Other prod/c",
        "Thing default/a",
        "Thing default/b",
        "Thing prod/z",
    ]
    assert names((await store.list(kind="Thing"))[0]) == [
        "Thing default/a",
        "Thing default/b",
        "Thing prod/z",
    ]
    assert names((await store.list(namespace="prod"))[0]) == ["Other prod/c", "Thing prod/z"]
    assert names((await store.list(kind="Other", namespace="prod"))[0]) == ["Other prod/c"]


async def test_list_revision_matches_the_rows(store: Store) -> None:
    async def writer() -> None:
        for i in range(20):
            await store.apply([res(f"r{i}")])

    task = asyncio.create_task(writer())
    while not task.done():
        items, rev = await store.list()
        assert len(items) == rev  # one resource per revision
        assert all(r.revision <= rev for r in items)
        await asyncio.sleep(0)
    await task


# ------------------------------------------------------------------ watch


async def test_watch_replays_then_streams(store: Store) -> None:
    await store.apply([res("a")])
    await store.apply([res("b")])
    await store.delete([key("a")])
    watch = store.watch(since=1)
    replay = await take(watch, 2)
    assert [(e.type, e.key, e.revision) for e in replay] == [
        (EventType.PUT, key("b"), 2),
        (EventType.DELETE, key("a"), 3),
    ]
    deleted = replay[1].resource
    assert deleted is not None and deleted.metadata.resource_version == "1"

    await store.apply([res("c")])
    live = await take(watch, 1)
    assert [(e.type, e.key, e.revision) for e in live] == [(EventType.PUT, key("c"), 4)]
    assert live[0].resource is not None and live[0].resource.revision == 4
    await watch.aclose()


async def test_watch_from_zero_replays_everything(store: Store) -> None:
    await store.apply([res("b"), res("a")])
    watch = store.watch(since=0)
    events = await take(watch, 2)
    assert [e.key for e in events] == [key("a"), key("b")]  # key order within a revision
    assert {e.revision for e in events} == {1}
    await watch.aclose()


async def test_watch_without_since_gets_only_future_events(store: Store) -> None:
    await store.apply([res("old")])
    watch = store.watch()
    await store.apply([res("new")])
    events = await take(watch, 1)
    assert [(e.key, e.revision) for e in events] == [(key("new"), 2)]
    await watch.aclose()


async def test_watch_kind_filter(store: Store) -> None:
    watch = store.watch(since=0, kind="Other")
    await store.apply([res("a")])
    await store.apply([res("b", kind="Other")])
    await store.delete([key("a")])
    await store.delete([key("b", kind="Other")])
    events = await take(watch, 2)
    assert [(e.type, e.key, e.revision) for e in events] == [
        (EventType.PUT, key("b", kind="Other"), 2),
        (EventType.DELETE, key("b", kind="Other"), 4),
    ]
    await watch.aclose()


async def test_no_event_lost_or_duplicated_while_replaying(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_base, "WATCH_PAGE_REVISIONS", 3)  # force many pages
    total = 60
    for i in range(10):
        await store.apply([res(f"pre{i}")])

    async def writer() -> None:
        for i in range(total - 10):
            if i % 5 == 4:
                await store.delete([key(f"w{i - 1}")])
            else:
                await store.apply([res(f"w{i}")])
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    watches = [store.watch(since=s) for s in (0, 5)]
    results = await asyncio.gather(take(watches[0], total), take(watches[1], total - 5))
    await task
    assert [e.revision for e in results[0]] == list(range(1, total + 1))
    assert [e.revision for e in results[1]] == list(range(6, total + 1))
    for w in watches:
        await w.aclose()


async def test_many_watchers_and_cancellation(store: Store) -> None:
    watches = [store.watch(since=0) for _ in range(5)]
    tasks = [asyncio.create_task(take(w, 2)) for w in watches]
    blocked = asyncio.create_task(take(store.watch(since=0), 100))
    await store.apply([res("a")])
    tasks[0].cancel()  # one watcher goes away mid-stream; the others are unaffected
    await store.apply([res("b")])
    results = await asyncio.gather(*tasks[1:])
    assert all([e.revision for e in r] == [1, 2] for r in results)
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await store.apply([res("c")])  # the store still works after cancellations
    assert await store.revision() == 3


async def test_compact_expires_old_watches(store: Store) -> None:
    for i in range(5):
        await store.apply([res(f"r{i}")])
    await store.compact(3)
    with pytest.raises(WatchExpired):
        await take(store.watch(since=2), 1)
    events = await take(store.watch(since=3), 2)  # history after 3 is kept
    assert [e.revision for e in events] == [4, 5]
    await store.compact(2)  # already compacted further: a no-op
    with pytest.raises(StoreError):
        await store.compact(6)  # the future cannot be compacted


async def test_compaction_overtakes_a_paused_watcher(store: Store) -> None:
    await store.apply([res("a")])
    watch = store.watch(since=0)
    assert [e.revision for e in await take(watch, 1)] == [1]
    await store.apply([res("b")])
    await store.apply([res("c")])
    await store.compact(2)
    with pytest.raises(WatchExpired):
        await take(watch, 1)


async def test_history_is_bounded(make_store: MakeStore) -> None:
    s = make_store(history=3)
    try:
        for i in range(10):
            await s.apply([res(f"r{i}")])
        with pytest.raises(WatchExpired):
            await take(s.watch(since=6), 1)
        assert [e.revision for e in await take(s.watch(since=7), 3)] == [8, 9, 10]
        assert len((await s.list())[0]) == 10  # compaction drops history, not state
    finally:
        await s.close()


async def test_close_ends_watchers(make_store: MakeStore) -> None:
    s = make_store()
    task = asyncio.create_task(take(s.watch(), 1))
    await asyncio.sleep(0)
    await s.close()
    with pytest.raises(StoreError):
        await task
    with pytest.raises(StoreError):
        await s.get(key("a"))
