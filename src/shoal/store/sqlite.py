"""The embedded default store: one SQLite file, survives restarts.

* WAL journal with ``synchronous=FULL``: an apply/delete is acknowledged only after its
  WAL frame is fsynced, so an acknowledged write survives a crash or power loss (config
  writes are rare; the fsync per commit is cheap at that rate).
* Tables: ``resources`` (current state), ``events`` (history for watch replay; deletes
  are kept there as DELETE events with the last value), ``meta`` (``revision``,
  ``compacted``, ``schema``). History older than ``history`` revisions is compacted
  automatically on write.
* Every SQLite call runs on one dedicated thread with one connection, so the event loop
  never blocks and calls from this process are serialized. Writes use
  ``BEGIN IMMEDIATE`` so a second process writing the same file is serialized too, and
  a store reopened on the file continues the revision sequence.
* Watchers are woken by this instance's writes only. Writes made by another process
  (or another ``SqliteStore`` on the same file) are seen by reads, and by a watcher the
  next time it wakes, but do not wake it: cross-process watching is not supported.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import NotFound, StoreError, WatchExpired
from shoal.store.base import (
    DEFAULT_HISTORY,
    ApplyResult,
    Clock,
    Event,
    EventType,
    Loads,
    Notifier,
    Page,
    Record,
    check_compact,
    check_expect,
    check_unique,
    decode,
    dedupe,
    follow,
    plan_apply,
    utc_now,
)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    data TEXT NOT NULL, create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (revision, kind, namespace, name)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
"""

T = TypeVar("T")


class SqliteStore:
    """Opens (creating if needed) the database at once; use :meth:`open` from async code
    to keep that off the event loop."""

    def __init__(
        self,
        path: str | Path,
        *,
        loads: Loads = Resource.model_validate,
        history: int = DEFAULT_HISTORY,
        clock: Clock = utc_now,
        busy_timeout: float = 5.0,
    ) -> None:
        self._loads = loads
        self._history = history
        self._clock = clock
        self._notifier = Notifier()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-sqlite")
        try:
            self._conn = self._connect(Path(path), busy_timeout)
        except sqlite3.Error as e:
            self._executor.shutdown(wait=False)
            raise StoreError(f"cannot open store {path}: {e}") from e
        self._revision = self._meta("revision")

    @classmethod
    async def open(cls, path: str | Path, **kwargs: object) -> SqliteStore:
        return await asyncio.to_thread(lambda: cls(path, **kwargs))  # type: ignore[arg-type]

    @staticmethod
    def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(f"{path} has schema {row[0]}; this shoal knows {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _meta(self, key: str) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # ------------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._notifier.closed:
            raise StoreError("the store is closed")

        def call() -> T:
            try:
                return fn()
            except sqlite3.Error as e:
                raise StoreError(f"sqlite: {e}") from e

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _write(self, fn: Callable[[int], tuple[T, bool]]) -> T:
        """Run ``fn(current_revision)`` in one IMMEDIATE transaction on the worker thread;
        ``fn`` returns (result, changed). Watchers are woken from the thread after commit,
        so a cancelled caller cannot lose the wake-up of a committed write."""
        loop = asyncio.get_running_loop()

        def tx() -> T:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result, changed = fn(self._meta("revision"))
                if not changed:
                    conn.execute("ROLLBACK")
                    return result
                revision = self._meta("revision")
                compacted = self._meta("compacted")
                if revision - self._history > compacted:
                    self._compact_tx(revision - self._history)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._revision = revision
            loop.call_soon_threadsafe(self._notifier.notify)
            return result

        return await self._run(tx)

    def _load(self, data: str, key: tuple[str, str, str]) -> Resource:
        return decode(data, self._loads, key)

    def _fetch_records(self, keys: list[ResourceKey]) -> dict[ResourceKey, Record | None]:
        out: dict[ResourceKey, Record | None] = {}
        for key in keys:
            row = self._conn.execute(
                "SELECT data, create_revision, mod_revision FROM resources"
                " WHERE kind = ? AND namespace = ? AND name = ?",
                tuple(key),
            ).fetchone()
            out[key] = Record(*row) if row else None
        return out

    # ------------------------------------------------------------------ reads

    async def get(self, key: ResourceKey) -> Resource:
        def read() -> Resource:
            row = self._conn.execute(
                "SELECT data FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                tuple(key),
            ).fetchone()
            if row is None:
                raise NotFound(f"{key} not found")
            return self._load(row[0], key)

        return await self._run(read)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[Resource], int]:
        def read() -> tuple[list[Resource], int]:
            self._conn.execute("BEGIN")  # one read snapshot for rows and revision
            try:
                revision = self._meta("revision")
                rows = self._conn.execute(
                    "SELECT kind, namespace, name, data FROM resources"
                    " WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR namespace = ?2)"
                    " ORDER BY kind, namespace, name",
                    (kind, namespace),
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
            return [self._load(data, (k, ns, n)) for k, ns, n, data in rows], revision

        return await self._run(read)

    async def revision(self) -> int:
        self._revision = await self._run(lambda: self._meta("revision"))
        return self._revision

    # ------------------------------------------------------------------ writes

    async def apply(
        self, resources: Sequence[Resource], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> ApplyResult:
        keys = [r.key for r in resources]
        check_unique(keys)
        now = self._clock()

        def tx(current: int) -> tuple[ApplyResult, bool]:
            existing = self._fetch_records([*keys, *(expect or {})])
            check_expect(expect, existing)
            revision = current + 1
            writes = plan_apply(resources, existing, revision, now)
            results = [(w.key, w.outcome) for w in writes]
            changed = [w for w in writes if w.data is not None]
            if not changed:
                return ApplyResult(current, results), False
            self._conn.executemany(
                "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, namespace, name) DO UPDATE SET"
                " data = excluded.data, mod_revision = excluded.mod_revision",
                [(*w.key, w.data, w.create_revision, revision) for w in changed],
            )
            self._conn.executemany(
                "INSERT INTO events VALUES (?, 'PUT', ?, ?, ?, ?)",
                [(revision, *w.key, w.data) for w in changed],
            )
            self._set_revision(revision)
            return ApplyResult(revision, results), True

        return await self._write(tx)

    async def delete(
        self, keys: Sequence[ResourceKey], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> int:
        keys = dedupe(keys)

        def tx(current: int) -> tuple[int, bool]:
            existing = self._fetch_records([*keys, *(expect or {})])
            missing = [k for k in keys if existing[k] is None]
            if missing:
                raise NotFound(", ".join(str(k) for k in missing) + " not found")
            check_expect(expect, existing)
            if not keys:
                return current, False
            revision = current + 1
            self._conn.executemany(
                "DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                [tuple(k) for k in keys],
            )
            self._conn.executemany(
                "INSERT INTO events VALUES (?, 'DELETE', ?, ?, ?, ?)",
                [(revision, *k, existing[k].data) for k in keys],  # type: ignore[union-attr]
            )
            self._set_revision(revision)
            return revision, True

        return await self._write(tx)

    def _set_revision(self, revision: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))

    # ------------------------------------------------------------------ history

    def watch(
        self, *, since: int | None = None, kind: str | None = None
    ) -> AsyncGenerator[Event, None]:
        if self._notifier.closed:
            raise StoreError("the store is closed")
        return follow(self._fetch, self._notifier, self._revision if since is None else since, kind)

    async def _fetch(self, after: int, upto: int, kind: str | None) -> Page:
        def read() -> Page:
            self._conn.execute("BEGIN")
            try:
                head, compacted = self._meta("revision"), self._meta("compacted")
                if after < compacted:
                    raise WatchExpired(
                        f"revision {after} is compacted (history starts after {compacted})"
                    )
                last = min(upto, head)
                rows = self._conn.execute(
                    "SELECT revision, type, kind, namespace, name, data FROM events"
                    " WHERE revision > ? AND revision <= ? AND (?3 IS NULL OR kind = ?3)"
                    " ORDER BY revision, kind, namespace, name",
                    (after, last, kind),
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
            events = [
                Event(EventType(t), ResourceKey(k, ns, n), self._load(data, (k, ns, n)), rev)
                for rev, t, k, ns, n, data in rows
            ]
            return Page(events, last, head)

        return await self._run(read)

    async def compact(self, revision: int) -> None:
        def tx() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                check_compact(revision, self._meta("revision"))
                self._compact_tx(revision)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

        await self._run(tx)

    def _compact_tx(self, revision: int) -> None:
        if revision <= self._meta("compacted"):
            return
        self._conn.execute("DELETE FROM events WHERE revision <= ?", (revision,))
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (revision,))

    async def close(self) -> None:
        if self._notifier.closed:
            return
        self._notifier.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
