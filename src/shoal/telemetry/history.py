"""DurableMetricsStore: metrics history that outlives the control plane (SQLite).

The in-memory :class:`~shoal.telemetry.store.RingMetricsStore` answers for the recent
window (5 s resolution for 1 h, 60 s for 6 h, since this process started). Beside it, one
SQLite file (``<directory>/metrics.db``, WAL, 0600) keeps, per series (edge, node):

* ``series``: the edge, the node, when it was first seen, its origin (where its zero
  baseline lies: when the reporting agent started counting, docs/adr/0044), and its reset
  state: the last
  raw sample (counters, time, agent incarnation) and the sum of its earlier runs. After a
  restart the agents' next cumulative samples continue from there, so increments made
  while the control plane was down are counted once (100 persisted, down, 150 reported:
  +50) and a new incarnation during the outage starts a new run on top of the old one.
* ``rollup``: one row per series per minute for the last 25 h and per hour for 36 days,
  each the series' reset-adjusted cumulative counters (they never decrease) as of the
  *first* sample in that minute/hour. The count in a window is last minus baseline: the
  newest point at or before each end. Rows are written only when a new minute/hour starts.

Writes are batched. :meth:`~DurableMetricsStore.add` touches memory only;
:meth:`~DurableMetricsStore.flush` writes new rows and changed series states in one
transaction (``synchronous=NORMAL``: a process kill loses nothing committed, a power cut
may lose the last transactions, never consistency); :meth:`~DurableMetricsStore.run`
flushes every ``flush_interval`` (10 s) on a thread and once more when cancelled.
A kill -9 loses at most the rows and state of the last interval: the next cumulative
sample of each proxy carries the counts again (a series never written starts again with
its origin, so its first sample's counts are placed where they belong). Only increments a
proxy made after the last flush and before *its own* restart inside that interval are
lost (never counted twice).

Queries: for each series, if the ring holds it from before the window's start (or since
its very first sample), the ring answers (so windows the ring covers give the ring's
results); otherwise the baseline comes from the rollups (and the unflushed ones still in
memory) and the last point from the ring, memory or rollups, whichever is newest. Such a
series counts only if it has data inside the window. Without a point at or before the
window's start, the rule is :func:`~shoal.telemetry.store.baseline`'s: zero if the
series' origin is inside the window, else its oldest point. Resolution is the tier's: a rollup
baseline lies up to 60 s (minute tier) or 1 h (hour tier) before the window's start, and
increments made while nobody collected (control plane down) land in the first window
after them. Windows are clamped to the retention (36 days).

Bounds:

* at most ``max_series`` (10,000) series are persisted; further new series live only in
  the ring (and are lost on restart), counted in ``unpersisted_series``, warned once;
* on flush (at most every 5 min), rows older than their tier's span are deleted except
  the newest of them per series and tier (the baseline for the oldest windows), and a
  series that reported nothing for 36 days is deleted (memory and file);
* worst case per series: 1,501 minute + 865 hour rows + the series row. Counters are
  zigzag varints (a count of 2^40 takes six bytes). Measured
  (``tests/telemetry/test_history.py::test_bytes_per_series_are_bounded``: ten codes, 19
  latency buckets and every counter around 2^40..2^50, ~232 bytes of counters a row):
  **about 690 KB of file per series**, so ~6.9 GB at 10,000 series; a typical HTTP series
  (three codes, 100 requests/s for 36 days) takes about 270 KB. The file does not
  shrink: freed pages are reused.

A corrupt or unreadable file never stops the control plane: it is moved aside
(``metrics.db.corrupt-<unix time>``), with a warning, and the store starts empty (if
even that fails, history is kept in memory only). All sqlite3 calls hold one lock (the
flush thread or the event loop, never both).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from shoal.telemetry.model import Edge, EdgeRates, EdgeSample, Reporter, Security
from shoal.telemetry.store import (
    Pair,
    Resets,
    RingMetricsStore,
    SeriesKey,
    edge_rates,
    good_and_total,
    origin_of,
    series_key,
    sum_by_edge,
    zero,
)

log = logging.getLogger(__name__)

DB_NAME = "metrics.db"
MINUTE, HOUR = 60, 3600
# (resolution seconds, span seconds), finest first
TIERS: tuple[tuple[int, float], ...] = ((MINUTE, 25 * 3600.0), (HOUR, 36 * 86400.0))
SPANS = dict(TIERS)
RETENTION = TIERS[-1][1]
MAX_SERIES = 10_000
FLUSH_INTERVAL = 10.0
PRUNE_INTERVAL = 300.0
SCHEMA_VERSION = 2  # 2: series.origin

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, edge TEXT NOT NULL, node TEXT NOT NULL, first_at REAL NOT NULL,
    last_at REAL NOT NULL, incarnation TEXT NOT NULL, last_raw BLOB NOT NULL, earlier BLOB,
    origin REAL
);
CREATE TABLE IF NOT EXISTS rollup (
    series INTEGER NOT NULL, tier INTEGER NOT NULL, slot INTEGER NOT NULL,
    at REAL NOT NULL, counters BLOB NOT NULL,
    PRIMARY KEY (series, tier, slot)
) WITHOUT ROWID;
"""
UPSERT_SERIES = """
INSERT INTO series (id, edge, node, first_at, last_at, incarnation, last_raw, earlier,
    origin)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET last_at = excluded.last_at,
    incarnation = excluded.incarnation, last_raw = excluded.last_raw,
    earlier = excluded.earlier
"""
# the newest point of a series at or before ?4 (?2 / ?3: that time's minute / hour slot)
POINT_AT_OR_BEFORE = f"""
SELECT at, counters FROM (
    SELECT at, counters FROM rollup WHERE series = ?1 AND tier = {MINUTE} AND slot <= ?2
    AND at <= ?4 ORDER BY slot DESC LIMIT 1)
UNION ALL
SELECT at, counters FROM (
    SELECT at, counters FROM rollup WHERE series = ?1 AND tier = {HOUR} AND slot <= ?3
    AND at <= ?4 ORDER BY slot DESC LIMIT 1)
ORDER BY at DESC LIMIT 1
"""
OLDEST_POINT = "SELECT at, counters FROM rollup WHERE series = ? ORDER BY at LIMIT 1"
# rows older than the cut, except the newest of them (the oldest windows' baseline)
PRUNE = """
DELETE FROM rollup WHERE series = ?1 AND tier = ?2 AND slot < (
    SELECT max(slot) FROM rollup WHERE series = ?1 AND tier = ?2 AND slot < ?3)
"""
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_INTS = ("request_bytes", "response_bytes", "tcp_connections_opened",
         "tcp_connections_closed", "tcp_sent_bytes", "tcp_received_bytes")
_EDGE_FIELDS = tuple(f.name for f in dataclasses.fields(Edge))


# -- encoding ------------------------------------------------------------------------------
def _varints(values: Iterable[int]) -> bytes:
    """Zigzag LEB128: small counts take a byte, 2^40 six."""
    out = bytearray()
    for v in values:
        z = v << 1 if v >= 0 else (-v << 1) - 1
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


def _unvarints(data: bytes) -> list[int]:
    out: list[int] = []
    z = shift = 0
    for byte in data:
        z |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            out.append(z >> 1 if not z & 1 else -((z + 1) >> 1))
            z = shift = 0
    if shift:
        raise ValueError("truncated counters")
    return out


def encode_counters(s: EdgeSample) -> bytes:
    """A sample's counters as zigzag varints: the number of codes, then code and count
    pairs; the number of latency buckets, how many increments follow, the per-bucket
    increments (trailing zeros left out); the latency sum in microseconds and the byte and
    connection counters (trailing zeros left out)."""
    b = s.latency_buckets
    steps = [b[0], *(b[i] - b[i - 1] for i in range(1, len(b)))] if b else []
    while steps and steps[-1] == 0:
        steps.pop()
    tail = [round(s.latency_sum_ms * 1000), *(getattr(s, f) for f in _INTS)]
    while tail and tail[-1] == 0:
        tail.pop()
    codes = sorted(s.requests_by_code.items())
    return _varints([len(codes), *(x for pair in codes for x in pair),
                     len(b), len(steps), *steps, *tail])


def decode_counters(data: bytes, edge: Edge, node: str, at: float,
                    incarnation: str = "") -> EdgeSample:
    v = _unvarints(data)
    n = v[0]
    codes = dict(zip(v[1:1 + 2 * n:2], v[2:2 + 2 * n:2], strict=True))
    i = 1 + 2 * n
    width, k = v[i], v[i + 1]
    cumulative = list(accumulate(v[i + 2:i + 2 + k]))
    if len(cumulative) != k or k > width:
        raise ValueError("malformed counters")
    buckets = (*cumulative, *[cumulative[-1] if cumulative else 0] * (width - k))
    tail = v[i + 2 + k:]
    if len(tail) > 1 + len(_INTS):
        raise ValueError("malformed counters")
    tail += [0] * (1 + len(_INTS) - len(tail))
    return EdgeSample(edge=edge, at=at, requests_by_code=codes, latency_buckets=buckets,
                      latency_sum_ms=tail[0] / 1000, node=node, incarnation=incarnation,
                      **dict(zip(_INTS, tail[1:], strict=True)))


def encode_edge(edge: Edge) -> str:
    return json.dumps({f: getattr(edge, f) for f in _EDGE_FIELDS}, separators=(",", ":"))


def decode_edge(text: str) -> Edge:
    d = {k: v for k, v in json.loads(text).items() if k in _EDGE_FIELDS}
    d["security"] = Security(d.get("security", Security.NONE))
    d["reporter"] = Reporter(d.get("reporter", Reporter.SOURCE))
    return Edge(**d)


# -- the store -----------------------------------------------------------------------------
Slot = tuple[int, int]  # (tier resolution, slot number)


@dataclass
class _Tracked:
    key: SeriesKey
    id: int | None  # None: beyond the cap, in the ring only
    first_at: float
    origin: float  # where its zero baseline lies (store.origin_of its first sample)
    edge_json: str
    resets: Resets = field(default_factory=Resets)
    slots: dict[int, int] = field(default_factory=dict)  # tier -> newest slot with a row
    pending: dict[Slot, EdgeSample] = field(default_factory=dict)  # rows not written yet
    writing: dict[Slot, EdgeSample] = field(default_factory=dict)  # rows being written
    dirty: bool = False  # state changed since the last flush

    @property
    def current(self) -> EdgeSample:
        s = self.resets.current
        assert s is not None  # tracked series always have a sample
        return s

    def memory_rows(self) -> list[EdgeSample]:
        """Unwritten rows, oldest first (all newer than the written ones)."""
        return sorted({**self.writing, **self.pending}.values(), key=lambda s: s.at)


@dataclass
class _Lookup:
    """A series answered from the rollups: what memory knew, what the file must add."""

    tracked: _Tracked
    base: EdgeSample | None
    last: EdgeSample | None
    base_from_db: bool
    last_from_db: bool
    oldest: EdgeSample | None  # the oldest point memory has (if history before is lost)


def _newest(candidates: Iterable[EdgeSample | None]) -> EdgeSample | None:
    found = [c for c in candidates if c is not None]
    return max(found, key=lambda s: s.at) if found else None


def _oldest(candidates: Iterable[EdgeSample | None]) -> EdgeSample | None:
    found = [c for c in candidates if c is not None]
    return min(found, key=lambda s: s.at) if found else None


class DurableMetricsStore:
    """A :class:`~shoal.telemetry.model.MetricsStore` whose history survives restarts.
    Opens (creating if needed) ``directory/metrics.db`` at once: use :meth:`open` from
    async code to keep that off the event loop."""

    retention_seconds = RETENTION

    def __init__(self, directory: str | Path, *, clock: Callable[[], float] = time.time,
                 flush_interval: float = FLUSH_INTERVAL, max_series: int = MAX_SERIES,
                 ring: RingMetricsStore | None = None) -> None:
        self.path = Path(directory) / DB_NAME
        self._clock = clock
        self._flush_interval = flush_interval
        self._max_series = max_series
        self._ring = ring if ring is not None else RingMetricsStore(clock=clock)
        self._mem = threading.Lock()  # the in-memory state (add, queries, flush snapshots)
        self._db = threading.Lock()  # the connection: one sqlite3 user at a time
        self._tracked: dict[SeriesKey, _Tracked] = {}
        self._persisted = 0  # tracked series with an id
        self._next_id = 1
        self._last_prune = -math.inf
        self._failing = False  # a database error was logged and has not cleared yet
        self.unpersisted_series = 0  # new series beyond max_series: in memory only
        self._conn: sqlite3.Connection | None = self._open()

    @classmethod
    async def open(cls, directory: str | Path, **kwargs: object) -> DurableMetricsStore:
        return await asyncio.to_thread(lambda: cls(directory, **kwargs))  # type: ignore[arg-type]

    # -- opening -----------------------------------------------------------------------
    def _open(self, *, move_aside: bool = False) -> sqlite3.Connection:
        """Connect and load the series; a file that cannot be read is moved aside."""
        if not move_aside:
            try:
                conn, tracked = self._connect()
                self._install(tracked)
                return conn
            except (sqlite3.Error, OSError, ValueError, TypeError, KeyError, IndexError) as e:
                log.warning("metrics history unreadable: moving it aside and starting empty",
                            extra={"path": str(self.path), "error": str(e)})
        try:
            self._move_aside()
            conn, tracked = self._connect()
        except (sqlite3.Error, OSError, ValueError) as e:
            log.error("cannot keep metrics history on disk: keeping it in memory only",
                      extra={"path": str(self.path), "error": str(e)})
            conn, tracked = sqlite3.connect(":memory:", isolation_level=None,
                                            check_same_thread=False), []
            conn.executescript(SCHEMA)
        self._install(tracked)
        return conn

    def _connect(self) -> tuple[sqlite3.Connection, list[_Tracked]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            os.chmod(self.path, 0o600)
        except OSError as e:  # not ours: say so, keep going
            log.warning("cannot make the metrics history private",
                        extra={"path": str(self.path), "error": str(e)})
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] == 1:  # series.origin: unknown for the series it has
                conn.execute("ALTER TABLE series ADD COLUMN origin REAL")
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                             (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise ValueError(f"schema {row[0]}, this shoal knows {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            return conn, self._load(conn)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _load(conn: sqlite3.Connection) -> list[_Tracked]:
        out = []
        rows = conn.execute("SELECT id, edge, node, first_at, last_at, incarnation, last_raw,"
                            " earlier, origin FROM series ORDER BY id")
        for sid, edge_json, node, first_at, last_at, incarnation, raw, earlier, origin in rows:
            edge = decode_edge(edge_json)
            t = _Tracked((edge, node), int(sid), float(first_at),
                         float(first_at if origin is None else origin), edge_json)
            t.resets.last_raw = decode_counters(raw, edge, node, float(last_at), incarnation)
            if earlier is not None:
                t.resets.offset = decode_counters(earlier, edge, node, float(last_at))
            t.slots = {tier: int(last_at // tier) for tier, _ in TIERS}
            out.append(t)
        return out

    def _install(self, tracked: list[_Tracked]) -> None:
        with self._mem:
            self._tracked = {t.key: t for t in tracked}
            ids = [t.id for t in tracked if t.id is not None]
            self._persisted, self._next_id = len(ids), 1 + max(ids, default=0)

    def _move_aside(self) -> None:
        stamp = int(self._clock())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside, n = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}"), n + 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))

    # -- writing -----------------------------------------------------------------------
    def add(self, samples: Sequence[EdgeSample]) -> None:
        """Raw samples from the proxies; memory only (see :meth:`flush`)."""
        with self._mem:
            for raw in samples:
                key = series_key(raw)
                t = self._tracked.get(key) or self._track(key, raw)
                adjusted = t.resets.adjust(raw)
                if adjusted is None:
                    continue  # out of order
                self._ring.add_adjusted([adjusted], origin=t.origin)
                if t.id is None:
                    continue
                t.dirty = True
                for tier, _ in TIERS:
                    slot = int(adjusted.at // tier)
                    if slot > t.slots.get(tier, -1):
                        t.pending[(tier, slot)] = adjusted
                        t.slots[tier] = slot

    def _track(self, key: SeriesKey, first: EdgeSample) -> _Tracked:
        sid = None
        if self._persisted < self._max_series:
            sid, self._next_id, self._persisted = self._next_id, self._next_id + 1, \
                self._persisted + 1
        else:
            if not self.unpersisted_series:
                log.warning("metrics history is full: new series are kept in memory only",
                            extra={"max_series": self._max_series})
            self.unpersisted_series += 1
        t = _Tracked(key, sid, first.at, origin_of(first), encode_edge(key[0]))
        self._tracked[key] = t
        return t

    def flush(self) -> None:
        """Write pending rows and changed series states in one transaction; prune."""
        with self._db:
            if self._conn is None:
                return
            now = self._clock()
            prune = now - self._last_prune >= PRUNE_INTERVAL
            with self._mem:  # a snapshot (samples are immutable); encoding comes after
                batch = [t for t in self._tracked.values() if t.dirty and t.id is not None]
                for t in batch:
                    t.writing, t.pending, t.dirty = t.pending, {}, False
                snapshot = [(t, t.resets.last_raw, t.resets.offset, list(t.writing.items()))
                            for t in batch]
                idle = self._forget_idle(now) if prune else []
                ids = [t.id for t in self._tracked.values() if t.id is not None] \
                    if prune else None
            states, rows = [], []
            for t, raw, offset, written in snapshot:
                assert raw is not None
                states.append((t.id, t.edge_json, t.key[1], t.first_at, raw.at,
                               raw.incarnation, encode_counters(raw),
                               None if offset is None else encode_counters(offset),
                               t.origin))
                rows += [(t.id, tier, slot, s.at, encode_counters(s))
                         for (tier, slot), s in written
                         if s.at >= now - SPANS[tier] - tier]  # (after long write failures)
            ok = self._write(states, rows, idle, ids, now)
            with self._mem:
                for t in batch:
                    if not ok:
                        t.pending, t.dirty = {**t.writing, **t.pending}, True
                    t.writing = {}

    def _forget_idle(self, now: float) -> list[int]:
        """Series that reported nothing for the retention: gone from memory (their rows
        go with the flush)."""
        idle = [t for t in self._tracked.values() if t.current.at < now - RETENTION]
        for t in idle:
            del self._tracked[t.key]
            self._ring.forget(t.key)
            if t.id is not None:
                self._persisted -= 1
        return [t.id for t in idle if t.id is not None]

    def _write(self, states: list[tuple[object, ...]], rows: list[tuple[object, ...]],
               idle: list[int], prune_ids: list[int] | None, now: float) -> bool:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(UPSERT_SERIES, states)
            conn.executemany("INSERT OR IGNORE INTO rollup VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany("DELETE FROM rollup WHERE series = ?", [(i,) for i in idle])
            conn.executemany("DELETE FROM series WHERE id = ?", [(i,) for i in idle])
            if prune_ids is not None:
                conn.executemany(PRUNE, [(sid, tier, math.floor((now - span) / tier))
                                         for sid in prune_ids for tier, span in TIERS])
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._db_error(e, "flush")
            return False
        if prune_ids is not None:
            self._last_prune = now
        self._recovered()
        return True

    def _db_error(self, e: sqlite3.Error, doing: str) -> None:
        """Called holding the db lock. A corrupt file is moved aside and replaced by an
        empty one (every series is written again on the next flush)."""
        if getattr(e, "sqlite_errorname", "") in _CORRUPT:
            log.warning("metrics history corrupt: moving it aside and starting empty",
                        extra={"path": str(self.path), "error": str(e), "during": doing})
            assert self._conn is not None
            self._conn.close()
            with self._mem:
                tracked = list(self._tracked.values())
            self._conn = self._open(move_aside=True)
            # the state in memory is still right: keep it, and persist it again
            self._install(tracked)
            with self._mem:
                for t in tracked:
                    t.dirty = t.id is not None
                    t.slots.clear()  # the rows of the current minute/hour are gone too
            return
        if not self._failing:
            log.warning("metrics history: database error (retrying on the next flush)",
                        extra={"path": str(self.path), "error": str(e), "during": doing})
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("metrics history: database writable again", extra={"path": str(self.path)})
        self._failing = False

    async def run(self) -> None:
        """Flush every ``flush_interval`` (on a thread) until cancelled; then once more."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval)
                await asyncio.to_thread(self.flush)
        finally:
            self.flush()

    def close(self) -> None:
        self.flush()
        with self._db:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading -----------------------------------------------------------------------
    def edges(self) -> list[Edge]:
        with self._mem:
            return list(dict.fromkeys(edge for edge, _ in self._tracked))

    def latest(self) -> list[EdgeSample]:
        """The newest (reset-adjusted, never decreasing) sample of every edge, summed over
        its nodes; persisted ones included."""
        with self._mem:
            return sum_by_edge(t.current for t in self._tracked.values())

    def oldest_sample_at(self) -> float | None:
        """Since when there is history (persisted across restarts), within the retention:
        the earliest series' origin (its first sample's counts were made after it)."""
        with self._mem:
            first = min((t.origin for t in self._tracked.values()), default=None)
        return None if first is None else max(first, self._clock() - RETENTION)

    def rates(self, window_seconds: float, *, now: float | None = None) -> list[EdgeRates]:
        end = self._now(now)
        window = min(window_seconds, RETENTION)
        return edge_rates(self._pairs(end - window, end), window)

    def good_total(self, destination_service: str, window_seconds: float, *,
                   latency_threshold_ms: float | None = None, now: float | None = None
                   ) -> tuple[float, float]:
        end = self._now(now)
        start = end - min(window_seconds, RETENTION)
        return good_and_total(self._pairs(start, end), destination_service,
                              latency_threshold_ms)

    def _now(self, now: float | None) -> float:
        return now if now is not None else self._clock()

    def _pairs(self, start: float, end: float) -> list[Pair]:
        pairs: list[Pair] = []
        lookups: list[_Lookup] = []
        with self._mem:
            for key, t in self._tracked.items():
                oldest = self._ring.oldest_at(key)
                if t.id is None or (oldest is not None
                                    and (oldest <= start or oldest <= t.first_at)):
                    pair = self._ring.window(key, start, end)  # the ring covers the window
                    if pair is not None:
                        pairs.append(pair)
                    continue
                current = t.current
                if t.first_at > end or current.at <= start:
                    continue  # no data in the window
                rows = t.memory_rows()
                base = _newest(s for s in rows if s.at <= start)
                ring = self._ring.window(key, start, end)
                if current.at <= end:
                    last = current
                else:
                    last = _newest([*(s for s in rows if s.at <= end),
                                    ring[1] if ring is not None else None])
                in_ring = self._ring.window(key, oldest, oldest) if oldest is not None else None
                # unwritten rows are newer than written ones: the file can only help
                # where memory has nothing (for the last point, nor may the ring)
                lookups.append(_Lookup(
                    t, base, last, base is None,
                    current.at > end and not any(s.at <= end for s in rows),
                    _oldest([rows[0] if rows else None,
                             in_ring[1] if in_ring is not None else None])))
        if lookups:
            self._lookup(lookups, start, end)
        for lk in lookups:
            if lk.last is None or lk.last.at <= start:
                continue
            base = lk.base if lk.base is not None else zero(lk.tracked.key[0], start)
            pairs.append((base, lk.last))
        return pairs

    def _lookup(self, lookups: list[_Lookup], start: float, end: float) -> None:
        """Complete baselines and last points from the file; what it cannot complete (no
        file, an error) is left out rather than counted from zero."""
        with self._db:
            try:
                if self._conn is None:
                    raise sqlite3.ProgrammingError("closed")
                for lk in lookups:
                    if lk.base_from_db:
                        lk.base = self._point(lk.tracked, start)
                        if lk.base is None and lk.tracked.origin < start:
                            # counts made before the window (pruned, the file replaced, or
                            # before the first point): count from the oldest point there is
                            lk.base = _oldest([lk.oldest, self._oldest_point(lk.tracked)])
                            if lk.base is None:
                                lk.last = None
                    if lk.last_from_db:
                        lk.last = _newest([lk.last, self._point(lk.tracked, end)])
            except (sqlite3.Error, ValueError, TypeError, IndexError) as e:
                if isinstance(e, sqlite3.ProgrammingError):
                    pass  # closed
                elif isinstance(e, sqlite3.Error):
                    self._db_error(e, "query")
                else:
                    log.warning("metrics history: unreadable row",
                                extra={"path": str(self.path), "error": str(e)})
                for lk in lookups:
                    if lk.base_from_db or lk.last_from_db:
                        lk.last = None

    def _point(self, t: _Tracked, at: float) -> EdgeSample | None:
        """The newest row of a series at or before ``at``."""
        assert self._conn is not None
        row = self._conn.execute(POINT_AT_OR_BEFORE, (t.id, math.floor(at / MINUTE),
                                                      math.floor(at / HOUR), at)).fetchone()
        return None if row is None else decode_counters(row[1], *t.key, row[0])

    def _oldest_point(self, t: _Tracked) -> EdgeSample | None:
        assert self._conn is not None
        row = self._conn.execute(OLDEST_POINT, (t.id,)).fetchone()
        return None if row is None else decode_counters(row[1], *t.key, row[0])
