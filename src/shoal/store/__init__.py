"""The revisioned config store: one protocol, an in-memory and an SQLite implementation.

See :mod:`shoal.store.base` for the semantics (etcd-like revisions, watch, compaction).
"""

from shoal.store.base import ApplyResult, Event, EventType, Outcome, Store
from shoal.store.memory import MemoryStore
from shoal.store.sqlite import SqliteStore

__all__ = [
    "ApplyResult",
    "Event",
    "EventType",
    "MemoryStore",
    "Outcome",
    "SqliteStore",
    "Store",
]
