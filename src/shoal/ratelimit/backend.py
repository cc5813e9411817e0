"""Counter backends of the rate-limit service: fixed windows aligned to the epoch.

A request's checks are decided together: if any counter would go over its limit, the
request is refused and NO counter moves (a refused request uses no quota). Counters are
keyed by ``<rule id>|<header value>`` and the window's start.

* :class:`MemoryBackend` — one process; quota counters (long windows) are also written
  to SQLite on every admitted request, so they survive a restart.
* :class:`shoal.ratelimit.redis_backend.RedisBackend` — shared by several instances of
  the service; a Lua script does the check-and-increment atomically.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shoal.ratelimit.rules import Rule


@dataclass(frozen=True)
class Check:
    rule: Rule
    key: str  # <rule id>|<header value>


@dataclass(frozen=True)
class Outcome:
    used: int  # count in the current window after this decision
    over: bool
    reset: float  # seconds until the window ends


@dataclass(frozen=True)
class Usage:
    rule: str
    key: str  # the header value ("" when the rule is not per header)
    used: int
    limit: int
    unit: str
    reset: float

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "key": self.key, "used": self.used, "limit": self.limit,
                "remaining": max(0, self.limit - self.used), "unit": self.unit,
                "resetSeconds": round(self.reset, 1)}


class Backend(Protocol):
    async def hit(self, checks: Sequence[Check], hits: int, now: float) -> list[Outcome]: ...

    async def usage(self, quotas: Sequence[Rule], now: float) -> list[Usage]: ...

    async def close(self) -> None: ...


def window_start(now: float, window: int) -> int:
    return int(now // window) * window


def decide(counts: Sequence[int], checks: Sequence[Check], hits: int, now: float
           ) -> tuple[bool, list[Outcome]]:
    """Given current counts, is the request admitted, and the outcome of each check."""
    over = [c + hits > ch.rule.limit for c, ch in zip(counts, checks, strict=True)]
    admitted = not any(over)
    out = []
    for c, ch, o in zip(counts, checks, over, strict=True):
        reset = window_start(now, ch.rule.window) + ch.rule.window - now
        out.append(Outcome(c + hits if admitted else c, o, reset))
    return admitted, out


class QuotaFile:
    """Quota counters in SQLite: (key, window start) -> count; written through."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS quota (key TEXT, start INTEGER, "
                         "count INTEGER, PRIMARY KEY (key, start))")

    def load(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute("SELECT key, start, count FROM quota ORDER BY start")
        return {k: (s, c) for k, s, c in rows}

    def save(self, key: str, start: int, count: int) -> None:
        self._db.execute("INSERT INTO quota (key, start, count) VALUES (?, ?, ?) "
                         "ON CONFLICT (key, start) DO UPDATE SET count = excluded.count",
                         (key, start, count))

    def prune(self, key: str, before: int) -> None:
        self._db.execute("DELETE FROM quota WHERE key = ? AND start < ?", (key, before))

    def close(self) -> None:
        self._db.close()


class MemoryBackend:
    """Counters in a dict (the event loop serializes decisions); quotas persisted."""

    def __init__(self, quota_file: Path | None = None):
        self._counters: dict[str, tuple[int, int]] = {}  # key -> (window start, count)
        self._quotas = QuotaFile(quota_file) if quota_file is not None else None
        if self._quotas is not None:
            self._counters.update(self._quotas.load())
        self._hits = 0

    def _count(self, check: Check, now: float) -> int:
        start = window_start(now, check.rule.window)
        entry = self._counters.get(check.key)
        return entry[1] if entry is not None and entry[0] == start else 0

    async def hit(self, checks: Sequence[Check], hits: int, now: float) -> list[Outcome]:
        counts = [self._count(ch, now) for ch in checks]
        admitted, out = decide(counts, checks, hits, now)
        if admitted:
            for ch, o in zip(checks, out, strict=True):
                start = window_start(now, ch.rule.window)
                prev = self._counters.get(ch.key)
                self._counters[ch.key] = (start, o.used)
                if ch.rule.quota and self._quotas is not None:
                    self._quotas.save(ch.key, start, o.used)
                    if prev is not None and prev[0] != start:
                        self._quotas.prune(ch.key, start)
        self._hits += 1
        if self._hits % 10_000 == 0:
            self._expire(now)
        return out

    def _expire(self, now: float) -> None:
        # Windows are at most a day long: anything older is dead.
        dead = [k for k, (s, _) in self._counters.items() if s + 86400 < now]
        for k in dead:
            del self._counters[k]

    async def usage(self, quotas: Sequence[Rule], now: float) -> list[Usage]:
        out = []
        for rule in quotas:
            start = window_start(now, rule.window)
            for key, (s, count) in sorted(self._counters.items()):
                if s == start and key.rpartition("|")[0] == rule.id:
                    out.append(Usage(rule.id, key.rpartition("|")[2], count, rule.limit,
                                     rule.unit, start + rule.window - now))
        return out

    async def close(self) -> None:
        if self._quotas is not None:
            self._quotas.close()
