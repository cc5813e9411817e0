"""An in-process store for tests and throwaway control planes.

It keeps the same JSON documents as :class:`~shoal.store.sqlite.SqliteStore` (so a
resource that cannot be serialized fails here too) and the same revision/watch
semantics. Every method runs without awaiting inside its critical section, so each
write is atomic with respect to every other coroutine on the loop.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncGenerator, Mapping, Sequence

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


class MemoryStore:
    def __init__(
        self,
        *,
        loads: Loads = Resource.model_validate,
        history: int = DEFAULT_HISTORY,
        clock: Clock = utc_now,
    ) -> None:
        self._loads = loads
        self._history = history
        self._clock = clock
        self._records: dict[ResourceKey, Record] = {}
        # History: (revision, type, key, data), ordered by revision.
        self._log: list[tuple[int, EventType, ResourceKey, str]] = []
        self._revision = 0
        self._compacted = 0
        self._notifier = Notifier()

    # ------------------------------------------------------------------ reads

    async def get(self, key: ResourceKey) -> Resource:
        self._check_open()
        rec = self._records.get(key)
        if rec is None:
            raise NotFound(f"{key} not found")
        return decode(rec.data, self._loads, key)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[Resource], int]:
        self._check_open()
        items = [
            decode(rec.data, self._loads, key)
            for key, rec in sorted(self._records.items())
            if (kind is None or key.kind == kind)
            and (namespace is None or key.namespace == namespace)
        ]
        return items, self._revision

    async def revision(self) -> int:
        self._check_open()
        return self._revision

    # ------------------------------------------------------------------ writes

    async def apply(
        self, resources: Sequence[Resource], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> ApplyResult:
        self._check_open()
        keys = [r.key for r in resources]
        check_unique(keys)
        existing = {k: self._records.get(k) for k in [*keys, *(expect or {})]}
        check_expect(expect, existing)
        new_revision = self._revision + 1
        writes = plan_apply(resources, existing, new_revision, self._clock())
        results = [(w.key, w.outcome) for w in writes]
        if all(w.data is None for w in writes):
            return ApplyResult(self._revision, results)
        for w in sorted(writes, key=lambda w: w.key):  # events of one revision: key order
            if w.data is not None:
                self._records[w.key] = Record(w.data, w.create_revision, new_revision)
                self._log.append((new_revision, EventType.PUT, w.key, w.data))
        self._committed(new_revision)
        return ApplyResult(new_revision, results)

    async def delete(
        self, keys: Sequence[ResourceKey], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> int:
        self._check_open()
        keys = dedupe(keys)
        missing = [k for k in keys if k not in self._records]
        if missing:
            raise NotFound(", ".join(str(k) for k in missing) + " not found")
        check_expect(expect, {k: self._records.get(k) for k in [*keys, *(expect or {})]})
        if not keys:
            return self._revision
        new_revision = self._revision + 1
        for key in sorted(keys):
            rec = self._records.pop(key)
            self._log.append((new_revision, EventType.DELETE, key, rec.data))
        self._committed(new_revision)
        return new_revision

    def _committed(self, revision: int) -> None:
        self._revision = revision
        if revision - self._history > self._compacted:
            self._compact(revision - self._history)
        self._notifier.notify()

    # ------------------------------------------------------------------ history

    def watch(
        self, *, since: int | None = None, kind: str | None = None
    ) -> AsyncGenerator[Event, None]:
        self._check_open()
        return follow(self._fetch, self._notifier, self._revision if since is None else since, kind)

    async def _fetch(self, after: int, upto: int, kind: str | None) -> Page:
        self._check_open()
        if after < self._compacted:
            raise WatchExpired(
                f"revision {after} is compacted (history starts after {self._compacted})"
            )
        upto = min(upto, self._revision)
        lo = bisect.bisect_right(self._log, after, key=lambda e: e[0])
        hi = bisect.bisect_right(self._log, upto, key=lambda e: e[0])
        events = [
            Event(type_, key, decode(data, self._loads, key), rev)
            for rev, type_, key, data in self._log[lo:hi]
            if kind is None or key.kind == kind
        ]
        return Page(events, upto, self._revision)

    async def compact(self, revision: int) -> None:
        self._check_open()
        check_compact(revision, self._revision)
        self._compact(revision)

    def _compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        cut = bisect.bisect_right(self._log, revision, key=lambda e: e[0])
        del self._log[:cut]
        self._compacted = revision

    async def close(self) -> None:
        self._notifier.close()

    def _check_open(self) -> None:
        if self._notifier.closed:
            raise StoreError("the store is closed")
