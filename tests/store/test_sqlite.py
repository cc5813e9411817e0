"""What only the SQLite store promises: the file, durability settings, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.errors import StoreError, WatchExpired
from shoal.store import Event, EventType, SqliteStore


def res(name: str, **spec: Any) -> Resource:
    return Resource(
        api_version="test.shoal.io/v1",
        kind="Thing",
        metadata=Metadata(name=name),
        spec=spec or {"v": 1},
    )


def key(name: str) -> ResourceKey:
    return ResourceKey("Thing", "default", name)


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(10):  # turns a hang into a failure
        async for e in events:
            out.append(e)
            if len(out) == n:
                break
    return out


async def test_data_and_revisions_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    first = SqliteStore(path)
    await first.apply([res("a"), res("b")])
    await first.apply([res("a", v=2)])
    await first.delete([key("b")])
    created = (await first.get(key("a"))).metadata.creation_timestamp
    await first.close()

    second = await SqliteStore.open(path)
    try:
        assert await second.revision() == 3
        a = await second.get(key("a"))
        assert a.spec == {"v": 2} and a.revision == 2
        assert a.metadata.creation_timestamp == created
        assert [r.key for r in (await second.list())[0]] == [key("a")]

        result = await second.apply([res("c")])
        assert result.revision == 4  # the sequence continues
        events = await take(second.watch(since=0), 4)  # history survives too
        assert [(e.type, e.key, e.revision) for e in events] == [
            (EventType.PUT, key("a"), 1),
            (EventType.PUT, key("b"), 1),
            (EventType.PUT, key("a"), 2),
            (EventType.DELETE, key("b"), 3),
        ]
    finally:
        await second.close()


async def test_compaction_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    async with SqliteStore(path) as store:
        for i in range(4):
            await store.apply([res(f"r{i}")])
        await store.compact(2)
    async with SqliteStore(path) as store:
        with pytest.raises(WatchExpired):
            await take(store.watch(since=1), 1)
        assert [e.revision for e in await take(store.watch(since=2), 2)] == [3, 4]


async def test_durability_settings(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "shoal.db") as store:
        await store.apply([res("a")])
    conn = sqlite3.connect(tmp_path / "shoal.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"resources", "events", "meta"} <= tables
    row = conn.execute(
        "SELECT create_revision, mod_revision FROM resources WHERE name = 'a'"
    ).fetchone()
    assert row == (1, 1)
    conn.close()


async def test_two_stores_on_one_file_share_one_revision_sequence(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    async with SqliteStore(path) as one, SqliteStore(path) as two:
        assert (await one.apply([res("a")])).revision == 1
        assert (await two.apply([res("b")])).revision == 2
        assert (await one.get(key("b"))).revision == 2
        items, revision = await one.list()
        assert revision == 2 and len(items) == 2
        # A watcher on `one` is not woken by `two`, but sees its writes when it reads.
        events = await take(one.watch(since=0), 2)
        assert [e.revision for e in events] == [1, 2]


async def test_unloadable_stored_data_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    async with SqliteStore(path) as store:
        await store.apply([res("a")])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE resources SET data = '{\"kind\": 1}'")
    conn.commit()
    conn.close()
    async with SqliteStore(path) as store:
        with pytest.raises(StoreError, match="Thing default/a"):
            await store.get(key("a"))


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    await SqliteStore(path).close()  # creates the file
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema 99"):
        SqliteStore(path)


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "missing-dir" / "shoal.db")
