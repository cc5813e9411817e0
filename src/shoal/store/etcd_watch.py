"""Watching an etcd prefix as a stream of store events that survives lost connections.

Each watcher owns one etcd watch stream. It remembers the last revision it delivered
completely (etcd never splits one revision across watch responses) and, when the stream
ends or the connection fails (etcd restarted, an endpoint went away), opens a new one
from the next revision: nothing is lost and nothing is repeated. Before each (re)start it
checks that history from there still exists — a read at the cursor's revision fails if
etcd compacted past it — since etcd itself accepts a start exactly at the compacted
revision but may have dropped deletes made at it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import StoreError, WatchExpired
from shoal.store.base import Event, EventType
from shoal.store.etcd_client import EtcdClient, EtcdError, EtcdUnavailable, KeyValue, parse_events

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_FIRST = 0.05
RETRY_MAX = 2.0


class Closing:
    """Set once by the store's close(); every wait of a watcher races with it."""

    def __init__(self) -> None:
        self.closed = False
        self._future: asyncio.Future[None] | None = None

    def close(self) -> None:
        self.closed = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the store closes first (then StoreError)."""
        if self.closed:
            raise StoreError("the store was closed")
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(aw)
        waits: list[asyncio.Future[Any]] = [task, self._future]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait([task])
        raise StoreError("the store was closed")


class EtcdWatcher:
    def __init__(
        self,
        *,
        client: EtcdClient,
        key: bytes,
        range_end: bytes,
        offset: int,
        closing: Closing,
        parse_key: Callable[[bytes], ResourceKey | None],
        load: Callable[[KeyValue, ResourceKey], Resource],
        compacted: Callable[[], int],
    ) -> None:
        self._client = client
        self._key = key
        self._end = range_end
        self._offset = offset
        self._closing = closing
        self._parse_key = parse_key
        self._load = load
        self._compacted = compacted

    async def run(
        self, since: int | None, current: Callable[[], Awaitable[int]]
    ) -> AsyncGenerator[Event, None]:
        guard = self._closing.guard
        cursor = since if since is not None else await guard(current())
        delay = RETRY_FIRST
        while True:
            await guard(self._check_history(cursor))
            try:
                async with self._client.watch(
                    self._key, self._end, cursor + 1 + self._offset
                ) as results:
                    async for events in self._batches(results):
                        delay = RETRY_FIRST
                        if cursor < self._compacted():
                            # This instance compacted past a watcher that was not reading.
                            raise WatchExpired(f"revision {cursor} is compacted")
                        for event in events:
                            yield event
                        cursor = events[-1].revision
                log.info("etcd watch stream ended at revision %d; resuming", cursor)
            except (httpx.TransportError, EtcdUnavailable) as e:
                log.warning("etcd watch lost at revision %d (%r); resuming", cursor, e)
            await guard(asyncio.sleep(delay))
            delay = min(delay * 2, RETRY_MAX)

    async def _check_history(self, cursor: int) -> None:
        if cursor < self._compacted():
            raise WatchExpired(f"revision {cursor} is compacted")
        try:
            await self._client.range(self._key, revision=cursor + self._offset, count_only=True)
        except WatchExpired as e:
            raise WatchExpired(f"revision {cursor} is compacted: {e}") from e
        except EtcdUnavailable:
            pass  # the watch itself will fail and be retried
        except EtcdError as e:
            if "future revision" not in str(e):
                raise

    async def _batches(self, results: AsyncIterator[dict[str, Any]]) -> AsyncIterator[list[Event]]:
        """The events of each revision, in key order, one list per revision."""
        iterator = aiter(results)
        while True:
            result = await self._closing.guard(anext(iterator, None))
            if result is None:
                return
            if int(result.get("compact_revision", 0)):
                raise WatchExpired(
                    f"etcd compacted history up to revision {result['compact_revision']}"
                )
            if result.get("canceled"):
                raise StoreError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
            events = self._events(result)
            for _, group in itertools.groupby(events, key=lambda e: e.revision):
                yield sorted(group, key=lambda e: e.key)

    def _events(self, result: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        for raw in parse_events(result):
            key = self._parse_key(raw.kv.key)
            if key is None:
                continue
            revision = raw.kv.mod_revision - self._offset
            if not raw.deleted:
                out.append(Event(EventType.PUT, key, self._load(raw.kv, key), revision))
            elif raw.prev is None:
                raise WatchExpired(f"the value of deleted {key} was compacted away")
            else:
                out.append(Event(EventType.DELETE, key, self._load(raw.prev, key), revision))
        return out
