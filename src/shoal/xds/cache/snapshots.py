"""Per-proxy snapshots, and a latest-wins way for ADS streams to wait for changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import Message

from shoal.xds.cache.packing import ChangeCache, PackCache, Packed, ResponseCache
from shoal.xds.types import ProxySnapshot, split

# Sweep the pack cache when it holds this many more entries than after the last sweep,
# or (maybe_sweep, after each push) this many more bytes than the live half of it.
_SWEEP_SLACK = 4096
_SWEEP_BYTES = 16 << 20


@dataclass
class _Slot:
    snapshot: ProxySnapshot | None = None
    generation: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class SnapshotCache:
    """What each proxy should have, by node id.

    ``set``/``remove`` are synchronous and must be called from the event loop thread.
    A stream follows one node with :meth:`watch`, which is latest-wins: a consumer that is
    slow sees only the newest snapshot, never a queue of intermediate ones.
    """

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._generation = 0  # global, so it never goes backwards when a slot is recreated
        self.packs = PackCache()
        self.responses = ResponseCache()  # SotW responses by content (sotw.py)
        self.changes = ChangeCache(self.packed)  # SotW partial responses (sotw.py)
        self._swept_size = 0
        self._swept_bytes = 0

    def set(self, node_id: str, snapshot: ProxySnapshot) -> None:
        slot = self._slots.setdefault(node_id, _Slot())
        slot.snapshot = snapshot
        self._bump(slot)
        if len(self.packs) > self._swept_size + _SWEEP_SLACK:
            self.sweep()

    def get(self, node_id: str) -> ProxySnapshot | None:
        slot = self._slots.get(node_id)
        return slot.snapshot if slot else None

    def remove(self, node_id: str) -> None:
        slot = self._slots.pop(node_id, None)
        if slot is not None:
            slot.snapshot = None
            self._bump(slot)

    def node_ids(self) -> list[str]:
        return [n for n, s in self._slots.items() if s.snapshot is not None]

    def packed(self, msg: Message) -> Packed:
        """The cached wire form of one resource message."""
        return self.packs.get(msg)

    def sweep(self) -> int:
        """Drop packed entries not referenced by any snapshot in the cache."""
        dropped = self.packs.sweep(self._live_messages())
        self._swept_size = len(self.packs)
        self._swept_bytes = self.packs.bytes
        return dropped

    def maybe_sweep(self) -> int:
        """:meth:`sweep` once the packed forms have grown by half of what was live at the
        last sweep (at least 16 MiB) or by 4,096 entries: a sweep walks every resource of
        every snapshot, so after each push it would cost O(proxies x resources) to free a
        handful of replaced messages."""
        grown = self.packs.bytes - self._swept_bytes
        if (grown > max(_SWEEP_BYTES, self._swept_bytes // 2)
                or len(self.packs) > self._swept_size + _SWEEP_SLACK):
            return self.sweep()
        return 0

    async def watch(self, node_id: str) -> AsyncIterator[ProxySnapshot | None]:
        """Yield the node's snapshot now (if any) and on every change; latest wins.

        ``None`` is yielded when the node's snapshot is removed.
        """
        seen = -1
        while True:
            slot = self._slots.get(node_id)
            if slot is None:
                slot = self._slots[node_id] = _Slot(generation=-1)
            if slot.generation != seen and (slot.snapshot is not None or seen != -1):
                seen = slot.generation
                yield slot.snapshot
                continue
            await slot.changed.wait()

    def _bump(self, slot: _Slot) -> None:
        self._generation += 1
        slot.generation = self._generation
        event, slot.changed = slot.changed, asyncio.Event()
        event.set()

    def _live_messages(self) -> Iterator[Message]:
        """Every message of every snapshot; a mapping that many snapshots share (the
        generators' shared sets, an Overlay's shared part) is walked once, not once per
        proxy."""
        seen: set[int] = set()
        for slot in self._slots.values():
            if slot.snapshot is not None:
                for res in slot.snapshot.resources.values():
                    shared, own = split(res.items)
                    yield from own.values()
                    if id(shared) not in seen:
                        seen.add(id(shared))
                        yield from shared.values()
