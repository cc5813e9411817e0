"""One home for the control plane's start-over caches: what a push builds for many
streams (responses, parsed requests, subscription name sets) is garbage after it, so
instead of LRU bookkeeping on every hit such a cache is emptied when one more entry would
take it past its bounds, and rebuilt from the next misses."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A dict holding at most ``max_entries`` entries and ``max_weight`` of their weights
    (bytes, names: whatever the caller counts); emptied when a new entry would exceed
    either. An entry heavier than ``max_weight`` on its own is not kept."""

    def __init__(self, *, max_entries: int | None = None, max_weight: int | None = None
                 ) -> None:
        self.max_entries, self.max_weight = max_entries, max_weight
        self._entries: dict[K, V] = {}
        self.weight = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V, weight: int = 1) -> V:
        """Keep ``value`` under ``key`` (see the class docstring); returns ``value``."""
        full = self.max_entries is not None and len(self._entries) >= self.max_entries
        heavy = self.max_weight is not None and self.weight + weight > self.max_weight
        if full or heavy:
            self._entries.clear()
            self.weight = 0
        if self.max_weight is None or weight <= self.max_weight:
            self._entries[key] = value
            self.weight += weight
        return value


class ByIdentity(Generic[V]):
    """Values worked out from particular objects (a shared mapping, a name set, a parsed
    request), found again only for those very objects: thousands of streams handed the
    same objects ask once, and nobody compares their contents. Keyed by the objects'
    ``id()`` s and any hashable ``extra``; an entry holds the objects, so they stay alive
    while it is kept and a recycled id never matches. Bounded as :class:`Bounded`."""

    def __init__(self, *, max_entries: int | None = None, max_weight: int | None = None
                 ) -> None:
        self._kept: Bounded[tuple[Hashable, ...], tuple[tuple[object, ...], V]] = Bounded(
            max_entries=max_entries, max_weight=max_weight)

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def weight(self) -> int:
        return self._kept.weight

    @property
    def max_entries(self) -> int | None:
        return self._kept.max_entries

    @property
    def max_weight(self) -> int | None:
        return self._kept.max_weight

    def get(self, objs: tuple[object, ...], extra: Hashable = None) -> V | None:
        got = self._kept.get((*map(id, objs), extra))
        if got is None:
            return None
        kept, value = got
        for a, b in zip(kept, objs, strict=True):
            if a is not b:
                return None
        return value

    def put(self, objs: tuple[object, ...], value: V, weight: int = 1,
            extra: Hashable = None) -> V:
        """Keep ``value`` for ``objs`` (and ``extra``); returns ``value``."""
        self._kept.put((*map(id, objs), extra), (objs, value), weight)
        return value
