"""The config store contract, its event types, and the parts every implementation shares.

Semantics follow etcd, so that an etcd-backed store can be a drop-in:

* One global revision, starting at 0 for an empty store. Every successful write
  (``apply`` with at least one change, ``delete``) bumps it by exactly one, however
  many resources it touches. Each stored resource carries its mod revision as
  ``metadata.resource_version``; the store also keeps its create revision.
* Deletes are events too. History (the event log) is kept for replay by ``watch`` and
  may be compacted; asking for history older than the compacted revision raises
  :class:`~shoal.errors.WatchExpired`.
* The store never needs to know the kinds: it stores ``resource.dump()`` as JSON and
  reads it back with an injected ``loads`` callable.

Watchers do not own event queues: each one tails the store's history from its own
cursor and sleeps on a shared :class:`Notifier` when it has caught up. Replay and live
streaming are therefore one code path, with no gap and no duplicate between them, and a
slow watcher costs no memory; if compaction overtakes it, it gets ``WatchExpired``
(like etcd's compacted-watch cancellation) and must re-list.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, Protocol

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import Conflict, StoreError, ValidationError, Violation

Outcome = Literal["created", "configured", "unchanged"]
Loads = Callable[[dict[str, Any]], Resource]
Clock = Callable[[], datetime]

#: How many revisions a watcher reads from history per round trip.
WATCH_PAGE_REVISIONS = 500
#: Default number of revisions of history kept before auto-compaction.
DEFAULT_HISTORY = 10_000


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Event:
    """One change. ``resource`` is the new value for PUT, the last stored value for DELETE
    (its ``resource_version`` is then the revision it was last written at; ``revision`` is
    the revision of the delete)."""

    type: EventType
    key: ResourceKey
    resource: Resource
    revision: int


@dataclass(frozen=True)
class ApplyResult:
    revision: int  # the new store revision, or the current one if nothing changed
    results: list[tuple[ResourceKey, Outcome]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(outcome != "unchanged" for _, outcome in self.results)


class Store(Protocol):
    async def get(self, key: ResourceKey) -> Resource:
        """The stored resource; raises NotFound."""
        ...

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[Resource], int]:
        """A consistent snapshot sorted by key, and the revision it was taken at."""
        ...

    async def apply(
        self, resources: Sequence[Resource], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> ApplyResult:
        """Create or update all resources in one transaction (all or nothing).

        ``expect`` maps keys (in the batch or not) to the mod revision the caller read,
        0 meaning "must not exist"; a mismatch raises Conflict and stores nothing.
        """
        ...

    async def delete(
        self, keys: Sequence[ResourceKey], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> int:
        """Delete all keys in one transaction; NotFound (nothing deleted) if any is missing."""
        ...

    async def revision(self) -> int: ...

    def watch(
        self, *, since: int | None = None, kind: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events with revision > ``since`` (None: only writes after this call) in order,
        then live ones. Raises WatchExpired when ``since`` < the compacted revision."""
        ...

    async def compact(self, revision: int) -> None:
        """Drop history at or below ``revision``."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class Record:
    """A resource as stored: its JSON document and revisions."""

    data: str
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Write:
    """What an apply will do to one key (``data`` is None when unchanged)."""

    key: ResourceKey
    outcome: Outcome
    data: str | None
    create_revision: int


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the fields the store owns."""
    meta = {
        k: v
        for k, v in doc.get("metadata", {}).items()
        if k not in ("resourceVersion", "creationTimestamp", "generation")
    }
    return {**doc, "metadata": meta}


def encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def decode(data: str, loads: Loads, key: ResourceKey | tuple[str, str, str]) -> Resource:
    try:
        return loads(json.loads(data))
    except Exception as e:  # the loader is injected; any failure means bad stored data
        raise StoreError(f"stored {ResourceKey(*key)} could not be loaded: {e}") from e


def check_expect(
    expect: Mapping[ResourceKey, int] | None, existing: Mapping[ResourceKey, Record | None]
) -> None:
    for key, want in (expect or {}).items():
        rec = existing.get(key)
        have = rec.mod_revision if rec else 0
        if have != want:
            state = f"is at revision {have}" if rec else "does not exist"
            wanted = f"revision {want}" if want else "it not to exist"
            raise Conflict(f"{key} {state}, expected {wanted}")


def check_unique(keys: Sequence[ResourceKey]) -> None:
    seen: set[ResourceKey] = set()
    dups: list[ResourceKey] = []
    for k in keys:
        if k in seen:
            dups.append(k)
        seen.add(k)
    if dups:
        raise ValidationError(
            [Violation("", "appears more than once in one batch", str(k)) for k in dups]
        )


def plan_apply(
    resources: Sequence[Resource],
    existing: Mapping[ResourceKey, Record | None],
    revision: int,
    now: datetime,
) -> list[Write]:
    """Decide created/configured/unchanged per resource and build the documents to store
    at ``revision`` (the revision the batch will get if anything changes)."""
    writes: list[Write] = []
    for res in resources:
        key = res.key
        doc = res.dump()
        rec = existing.get(key)
        created_at = format_timestamp(now)
        generation = 1
        if rec is not None:
            old = json.loads(rec.data)
            if _content(old) == _content(doc):
                writes.append(Write(key, "unchanged", None, rec.create_revision))
                continue
            created_at = old.get("metadata", {}).get("creationTimestamp") or created_at
            generation = int(old.get("metadata", {}).get("generation") or 1)
            if old.get("spec") != doc.get("spec"):  # labels or annotations alone: same
                generation += 1
        meta = {**doc["metadata"], "resourceVersion": str(revision)}
        meta["creationTimestamp"] = created_at
        meta["generation"] = generation
        data = encode({**doc, "metadata": meta})
        if rec is None:
            writes.append(Write(key, "created", data, revision))
        else:
            writes.append(Write(key, "configured", data, rec.create_revision))
    return writes


def dedupe(keys: Sequence[ResourceKey]) -> list[ResourceKey]:
    return list(dict.fromkeys(keys))


def check_compact(revision: int, current: int) -> None:
    if revision > current:
        raise StoreError(f"cannot compact to revision {revision}: the store is at {current}")


# --------------------------------------------------------------------------- watching


class Notifier:
    """Wakes every watcher after a write. Take a ``waiter()`` *before* reading history,
    then wait on it if there was nothing new: a write committed in between resolves it."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self.closed = False

    def waiter(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None

    def close(self) -> None:
        self.closed = True
        self.notify()


@dataclass(frozen=True)
class Page:
    """Events with cursor < revision <= upto, read consistently with ``head``."""

    events: list[Event]
    upto: int
    head: int


#: fetch(after, upto_at_most, kind) -> Page; raises WatchExpired if history after
#: ``after`` was compacted.
Fetch = Callable[[int, int, str | None], Awaitable[Page]]


async def follow(
    fetch: Fetch, notifier: Notifier, start: int, kind: str | None
) -> AsyncGenerator[Event, None]:
    """Tail history from ``start``: replay, then live. Ends with StoreError on close."""
    cursor = start
    while True:
        if notifier.closed:
            raise StoreError("the store was closed")
        waiter = notifier.waiter()
        page = await fetch(cursor, cursor + WATCH_PAGE_REVISIONS, kind)
        for event in page.events:
            yield event
        cursor = max(cursor, page.upto)
        if cursor >= page.head:
            # asyncio.wait does not cancel the shared future when this watcher is cancelled.
            await asyncio.wait([waiter])
