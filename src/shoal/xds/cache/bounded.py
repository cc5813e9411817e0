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
