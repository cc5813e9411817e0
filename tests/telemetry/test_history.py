"""DurableMetricsStore against real SQLite files, with an injected clock."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api import parse_yaml
from shoal.telemetry.history import DB_NAME, HOUR, MINUTE, RETENTION, DurableMetricsStore
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample
from shoal.telemetry.slo import SloEvaluator
from shoal.telemetry.store import RingMetricsStore

T0 = 1_699_999_200.0  # a whole hour
DAY = 86400.0
EDGE = Edge("client", "default", "client", "echo.default.svc.cluster.local", "default")
SVC = "echo.default.svc.cluster.local"


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


def sample(at: float, ok: int, bad: int = 0, *, node: str = "echo-1", incarnation: str = ""
           ) -> EdgeSample:
    total = ok + bad
    buckets = tuple(total for _ in LATENCY_BUCKETS_MS)
    return EdgeSample(EDGE, at, {200: ok, 503: bad} if bad else {200: ok}, buckets,
                      node=node, incarnation=incarnation)


def requests(store: object, window: float, now: float) -> float:
    return sum(r.requests for r in store.rates(window, now=now))  # type: ignore[attr-defined]


def sql(path: Path, statement: str, *args: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(statement, args).fetchall()


def rows(path: Path, tier: int) -> int:
    return sql(path, "SELECT count(*) FROM rollup WHERE tier = ?", tier)[0][0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores() -> Iterator[list[DurableMetricsStore]]:
    """Stores opened by a test (closed at the end if the test did not)."""
    opened: list[DurableMetricsStore] = []
    yield opened
    for s in opened:
        s.close()


def open_store(tmp_path: Path, clock: Clock, opened: list[DurableMetricsStore],
               **kw: object) -> DurableMetricsStore:
    s = DurableMetricsStore(tmp_path, clock=clock, **kw)  # type: ignore[arg-type]
    opened.append(s)
    return s


def kill(store: DurableMetricsStore, opened: list[DurableMetricsStore]) -> None:
    """What a kill -9 leaves: only what flush() wrote (the connection just goes away)."""
    assert store._conn is not None
    store._conn.close()
    store._conn = None
    opened.remove(store)


def every_minute(store: DurableMetricsStore, clock: Clock, start: float, end: float, *,
                 per_minute: int = 1) -> None:
    """``per_minute`` requests a minute since T0, a sample at each minute, a flush at each
    hour."""
    t = start
    while t <= end:
        clock.now = t
        store.add([sample(t, int((t - T0) // MINUTE) * per_minute)])
        if (t - T0) % HOUR == 0:
            store.flush()
        t += MINUTE


# -- restarts ------------------------------------------------------------------------------
def test_a_restart_keeps_rates_and_good_totals_across_it(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    ring = RingMetricsStore(clock=clock)
    for i in range(121):  # two hours, a sample a minute, 10 requests and 1 error each
        t = T0 + i * MINUTE
        clock.now = t
        batch = [sample(t, 9 * i, i), sample(t, 5 * i, node="echo-2")]
        first.add(batch)
        ring.add(batch)
    # windows the ring covers: the ring's answers
    for window in (60, 300, 1800, 7200):
        assert first.rates(window) == ring.rates(window)
        assert first.good_total("echo", window) == ring.good_total("echo", window)
    first.close()

    clock.now = T0 + 3 * HOUR  # down for an hour; the proxies kept counting
    second = open_store(tmp_path, clock, stores)
    assert second.edges() == [EDGE]
    assert second.good_total(SVC, 4 * HOUR) == (1680.0, 1800.0)  # everything so far
    for i in range(181, 241):  # another hour
        t = T0 + i * MINUTE
        clock.now = t
        second.add([sample(t, 9 * i, i), sample(t, 5 * i, node="echo-2")])
    now = T0 + 240 * MINUTE
    assert second.good_total(SVC, 5 * HOUR, now=now) == (3360.0, 3600.0)
    # 3 h back is before the restart: baseline from the rollups, 15 a minute since
    assert second.good_total(SVC, 3 * HOUR, now=now) == (2520.0, 2700.0)
    (r,) = second.rates(3 * HOUR, now=now)
    assert (r.requests, r.errors, r.by_code_class) == (2700.0, 180.0,
                                                       {"2xx": 2520.0, "5xx": 180.0})
    # a window that lies wholly before the restart
    assert second.good_total(SVC, HOUR, now=T0 + 2 * HOUR) == (840.0, 900.0)
    # the latest samples continue the series, summed over its nodes
    (latest,) = second.latest()
    assert latest.requests_by_code == {200: 14 * 240, 503: 240}


def test_a_kill_loses_no_counts_the_agents_send_again(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    first.add([sample(T0, 0), sample(T0 + 60, 100)])
    first.flush()
    clock.now = T0 + 70
    first.add([sample(T0 + 70, 120)])  # not flushed: lost with the process
    kill(first, stores)

    clock.now = T0 + HOUR
    second = open_store(tmp_path, clock, stores)
    assert second.good_total(SVC, HOUR + 1) == (100.0, 100.0)  # what the flush wrote
    second.add([sample(T0 + HOUR, 150)])  # the agent's next report, still cumulative
    assert second.good_total(SVC, HOUR + 1) == (150.0, 150.0)  # not 250, not 50
    assert requests(second, HOUR + 1, T0 + HOUR) == 150.0
    assert second.good_total(SVC, HOUR - 60) == (50.0, 50.0)  # since the last flushed
    assert second.good_total(SVC, 60) == (50.0, 50.0)  # all of it shows up now


SLO = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: echo}
spec: {service: echo, sli: {availability: {}}, target: 99, window: 30d}
"""


def slo_total(store: DurableMetricsStore, now: float) -> float:
    (status,) = SloEvaluator(store, started=now).evaluate(parse_yaml(SLO), now=now)
    return status.total


def test_an_slo_counts_what_the_first_sample_holds(tmp_path, clock, stores):
    """The history starts at its oldest sample, and that sample holds what the proxy
    counted before it: the SLO counts it (it used to be taken as the baseline)."""
    store = open_store(tmp_path, clock, stores)
    store.add([sample(T0, 41)])
    assert slo_total(store, T0) == 41.0
    clock.now = T0 + 5
    store.add([sample(T0 + 5, 50)])
    assert slo_total(store, T0 + 5) == 50.0


def test_a_kill_before_a_series_was_ever_written_loses_nothing(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    since = T0 - 5  # the agent started 5 s before its first report
    first.add([replace(sample(T0, 41), since=since), replace(sample(T0 + 4, 90), since=since)])
    kill(first, stores)  # within the first flush interval: nothing of it on disk

    clock.now = T0 + 30
    second = open_store(tmp_path, clock, stores)
    second.add([replace(sample(clock.now, 795), since=since)])
    assert slo_total(second, clock.now) == 795.0
    assert second.oldest_sample_at() == since
    assert requests(second, 300, clock.now) == 795.0  # all of it inside the window
    second.close()
    third = open_store(tmp_path, clock, stores)  # the origin was persisted
    assert third.oldest_sample_at() == since
    assert slo_total(third, clock.now) == 795.0


def test_history_lost_is_not_a_burst(tmp_path, clock, stores):
    """A new metrics file (the old one lost) beside agents that ran for hours: their
    first reports are not this minute's traffic, and stay not after a restart."""
    store = open_store(tmp_path, clock, stores)
    since = T0 - 3 * HOUR
    store.add([replace(sample(T0, 10_000, 30), since=since)])
    assert requests(store, 300, T0) == 0.0
    clock.now = T0 + 60
    store.add([replace(sample(clock.now, 10_050, 31), since=since)])
    assert requests(store, 300, clock.now) == 51.0
    assert slo_total(store, clock.now) == 10_081.0
    store.close()
    clock.now = T0 + 2 * HOUR
    again = open_store(tmp_path, clock, stores)
    again.add([replace(sample(clock.now, 10_100, 31), since=since)])
    assert requests(again, 300, clock.now) == 50.0
    assert requests(again, 90 * MINUTE, clock.now) == 50.0  # baseline: a row on disk
    assert requests(again, 3 * HOUR, clock.now) == 101.0  # from the first row on disk
    assert slo_total(again, clock.now) == 10_131.0


def test_a_version_1_file_is_upgraded_in_place(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    first.add([sample(T0, 0), sample(T0 + 60, 100)])
    first.close()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as conn, conn:  # as version 1 left it
        conn.execute("ALTER TABLE series DROP COLUMN origin")
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema'")
    clock.now = T0 + HOUR
    second = open_store(tmp_path, clock, stores)
    assert second.oldest_sample_at() == T0  # unknown origins: the first sample's time
    assert second.good_total(SVC, 2 * HOUR) == (100.0, 100.0)
    assert sql(second.path, "SELECT value FROM meta WHERE key = 'schema'") == [(2,)]
    assert not list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))


def test_an_agent_restart_during_the_outage_starts_a_new_run(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    first.add([sample(T0, 0, incarnation="a1"), sample(T0 + 60, 100, 10, incarnation="a1"),
               sample(T0, 0, node="echo-2"), sample(T0 + 60, 70, node="echo-2")])
    # echo-2 restarted (no incarnation: its counters went down) before the flush
    first.add([sample(T0 + 120, 5, node="echo-2")])
    first.close()

    clock.now = T0 + 2 * HOUR
    second = open_store(tmp_path, clock, stores)
    assert second.good_total(SVC, 3 * HOUR) == (175.0, 185.0)
    # while nobody collected, echo-1's agent restarted and counted 30 (3 errors) since,
    # echo-2 went on from 5 to 25
    second.add([sample(clock.now, 27, 3, incarnation="a2"), sample(clock.now, 25, node="echo-2")])
    assert second.good_total(SVC, 3 * HOUR) == (222.0, 235.0)
    (r,) = second.rates(3 * HOUR)
    assert (r.requests, r.errors) == (235.0, 13.0)
    second.close()
    third = open_store(tmp_path, clock, stores)  # the offsets were persisted too
    third.add([sample(clock.now + 60, 28, 3, incarnation="a2")])
    assert third.good_total(SVC, 3 * HOUR, now=clock.now + 60) == (223.0, 236.0)


def test_oldest_sample_is_remembered_and_slo_windows_count_from_it(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    assert first.oldest_sample_at() is None
    first.add([sample(T0, 0)])
    first.close()
    clock.now = T0 + 2 * DAY
    second = open_store(tmp_path, clock, stores)
    assert second.oldest_sample_at() == T0
    assert SloEvaluator(second, started=clock.now).observable_seconds(clock.now) == 2 * DAY
    assert second.retention_seconds == 36 * DAY


def test_slo_over_a_reopened_store_counts_the_traffic_before_the_restart(
        tmp_path, clock, stores):
    (slo,) = parse_yaml("""
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: echo}
spec: {service: echo, sli: {availability: {}}, target: 99, window: 30d}
""")
    first = open_store(tmp_path, clock, stores)
    for i in range(25):  # a day of traffic, a sample an hour: 40 requests, 2 errors each
        clock.now = T0 + i * HOUR
        first.add([sample(clock.now, 38 * i, 2 * i)])
    first.close()

    restart = T0 + 2 * DAY
    clock.now = restart
    second = open_store(tmp_path, clock, stores)
    second.add([sample(restart, 38 * 24 + 100, 48)])  # 100 more, all good
    (status,) = SloEvaluator(second, started=restart).evaluate([slo], now=restart)
    assert (status.good, status.total) == (1012.0, 1060.0)
    assert status.observed_seconds == 2 * DAY
    assert status.attainment == pytest.approx(100 * 1012 / 1060)


# -- tiers and bounds ----------------------------------------------------------------------
def test_minute_and_hour_tiers_give_the_right_window_counts(tmp_path, clock, stores):
    first = open_store(tmp_path, clock, stores)
    end = T0 + 3 * DAY
    every_minute(first, clock, T0, end)
    ring = first._ring
    for window in (300, HOUR, 6 * HOUR):  # the ring's own answers while it covers them
        assert requests(first, window, end) == requests(ring, window, end) == window / 60
    first.close()
    assert rows(first.path, MINUTE) <= 25 * 60 + 2  # pruned to 25 h (+ baseline, current)

    second = open_store(tmp_path, clock, stores)  # the ring is empty: rollups only
    assert second._ring.series_keys() == []
    for window in (300, HOUR, 24 * HOUR, 25 * HOUR - 60,  # minute tier
                   26 * HOUR, 2 * DAY, 3 * DAY):  # older than 25 h: hour tier
        assert requests(second, window, end) == window / 60, window
        assert second.good_total(SVC, window, now=end) == (window / 60, window / 60)
    # windows in the past (the dashboard's points) on either tier
    assert requests(second, HOUR, end - 2 * HOUR) == 60
    assert requests(second, HOUR, end - 30 * HOUR) == 60
    # the hour tier's resolution: half an hour, 30 h ago, counts its whole hour
    assert requests(second, 1800, end - 30 * HOUR) == 60
    # new samples after the restart: the ring takes over where it covers
    every_minute(second, clock, end + MINUTE, end + HOUR)
    assert requests(second, 300, end + HOUR) == 5
    assert requests(second, 2 * HOUR, end + HOUR) == 120  # half from the rollups


def test_retention_prunes_rows_and_forgets_idle_series(tmp_path, clock, stores):
    store = open_store(tmp_path, clock, stores)
    idle = sample(T0, 5, node="gone")
    store.add([idle])
    end = T0 + 40 * DAY
    t = T0
    while t <= end:  # a sample an hour for 40 days, then one a minute for the last day
        clock.now = t
        store.add([sample(t, int((t - T0) // MINUTE))])
        store.flush()
        t += HOUR if t < end - DAY else MINUTE
    store.flush()
    assert rows(store.path, HOUR) <= 36 * 24 + 2
    assert rows(store.path, MINUTE) <= 25 * 60 + 2
    assert store.oldest_sample_at() == end - RETENTION
    # the idle series is gone from memory and file; the other still answers 36 days
    assert sql(store.path, "SELECT node FROM series") == [("echo-1",)]
    assert store.good_total(SVC, RETENTION) == (RETENTION / 60, RETENTION / 60)
    # longer windows are clamped to the retention
    assert store.good_total(SVC, 50 * DAY) == (RETENTION / 60, RETENTION / 60)
    store.close()
    reopened = open_store(tmp_path, clock, stores)
    assert reopened.good_total(SVC, RETENTION) == (RETENTION / 60, RETENTION / 60)
    assert reopened.good_total(SVC, 30 * DAY) == (30 * DAY / 60, 30 * DAY / 60)


def test_series_beyond_the_cap_live_in_memory_only(tmp_path, clock, stores, caplog):
    store = open_store(tmp_path, clock, stores, max_series=2)
    with caplog.at_level(logging.WARNING, logger="shoal.telemetry.history"):
        for node in ("a", "b", "c", "d"):
            store.add([sample(T0, 0, node=node), sample(T0 + 60, 10, node=node)])
    assert store.unpersisted_series == 2
    assert [r.getMessage() for r in caplog.records].count(
        "metrics history is full: new series are kept in memory only") == 1
    assert store.good_total(SVC, HOUR, now=T0 + 60) == (40.0, 40.0)  # all counted, live
    store.close()
    clock.now = T0 + 120
    reopened = open_store(tmp_path, clock, stores, max_series=2)
    assert reopened.good_total(SVC, HOUR) == (20.0, 20.0)  # only the persisted ones


def test_a_corrupt_file_is_moved_aside(tmp_path, clock, stores, caplog):
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 500)
    with caplog.at_level(logging.WARNING, logger="shoal.telemetry.history"):
        store = open_store(tmp_path, clock, stores)
    assert "unreadable" in caplog.text
    aside = tmp_path / f"{DB_NAME}.corrupt-{int(T0)}"
    assert aside.read_bytes().startswith(b"this is not a database")
    store.add([sample(T0, 0), sample(T0 + 60, 10)])
    store.close()
    clock.now = T0 + 60
    assert open_store(tmp_path, clock, stores).good_total(SVC, HOUR) == (10.0, 10.0)


def test_an_unreadable_row_is_a_corrupt_file(tmp_path, clock, stores):
    store = open_store(tmp_path, clock, stores)
    store.add([sample(T0, 0), sample(T0 + 60, 10)])
    store.close()
    sql(tmp_path / DB_NAME, "UPDATE series SET last_raw = x'ff'")
    clock.now += 1
    store = open_store(tmp_path, clock, stores)
    assert store.edges() == []
    assert (tmp_path / f"{DB_NAME}.corrupt-{int(T0) + 1}").exists()


def test_corruption_found_later_moves_the_file_aside_and_keeps_counting(
        tmp_path, clock, stores, caplog):
    first = open_store(tmp_path, clock, stores)
    every_minute(first, clock, T0, T0 + 2 * HOUR, per_minute=10)
    first.close()
    # damage the rollup table's root page; the header and the series table stay readable
    (root,) = sql(first.path, "SELECT rootpage FROM sqlite_schema WHERE name = 'rollup'")[0]
    (page_size,) = sql(first.path, "PRAGMA page_size")[0]
    with open(first.path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)

    clock.now = T0 + 3 * HOUR
    second = open_store(tmp_path, clock, stores)
    assert second.edges() == [EDGE]  # the series and their reset state were readable
    with caplog.at_level(logging.WARNING, logger="shoal.telemetry.history"):
        second.good_total(SVC, HOUR, now=T0 + HOUR)  # needs the rollups: finds the damage
    assert "corrupt" in caplog.text
    assert (tmp_path / f"{DB_NAME}.corrupt-{int(clock.now)}").exists()
    # the new file starts without rollups; the counters go on from the state in memory
    assert second.good_total(SVC, 4 * HOUR) == (1200.0, 1200.0)
    second.add([sample(clock.now, 1300)])
    second.close()
    third = open_store(tmp_path, clock, stores)
    assert third.good_total(SVC, 4 * HOUR) == (1300.0, 1300.0)


def test_the_file_is_private(tmp_path, clock, stores):
    old = os.umask(0o022)
    try:
        store = open_store(tmp_path, clock, stores)
        store.add([sample(T0, 1)])
        store.flush()
        for name in (DB_NAME, f"{DB_NAME}-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


async def test_run_flushes_on_cancel(tmp_path, clock, stores):
    store = open_store(tmp_path, clock, stores, flush_interval=3600)
    task = asyncio.create_task(store.run())
    await asyncio.sleep(0)
    store.add([sample(T0, 0), sample(T0 + 60, 10)])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kill(store, stores)
    clock.now = T0 + 60
    assert open_store(tmp_path, clock, stores).good_total(SVC, HOUR) == (10.0, 10.0)


def test_bytes_per_series_are_bounded(tmp_path, clock, stores):
    """Worst case: every row kept, large counters, ten codes, 19 latency buckets."""
    n = 10
    store = open_store(tmp_path, clock, stores)
    end = T0 + 36 * DAY
    codes = (200, 201, 204, 301, 404, 429, 500, 502, 503, 504)
    big = 1 << 40

    def heavy(t: float, node: str) -> EdgeSample:
        k = int(t - T0)  # everything grows with time
        buckets = tuple(big + k * (i + 1) * 977 for i in range(len(LATENCY_BUCKETS_MS) + 1))
        return EdgeSample(
            EDGE, t, {c: big + k * (j + 7) for j, c in enumerate(codes)}, buckets,
            latency_sum_ms=(1 << 50) + k * 1.2345, request_bytes=(1 << 50) + k * 3,
            response_bytes=(1 << 50) + k * 5, tcp_connections_opened=big + k,
            tcp_connections_closed=big + k, tcp_sent_bytes=(1 << 50) + k * 7,
            tcp_received_bytes=(1 << 50) + k * 11, node=node)

    t = T0
    while t <= end:
        clock.now = t
        store.add([heavy(t, f"node-{i}") for i in range(n)])
        if (t - T0) % HOUR == 0:
            store.flush()
        t += HOUR if t < end - 25 * HOUR - HOUR else MINUTE
    store.close()
    assert rows(store.path, MINUTE) <= n * (25 * 60 + 2)
    assert rows(store.path, HOUR) >= n * 36 * 24
    per_series = (store.path.stat().st_size) / n
    print(f"bytes per series: {per_series:.0f}")
    assert per_series < 750_000  # ~690 KB, documented in shoal.telemetry.history


# -- the property --------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    ok: int = 0
    bad: int = 0
    run: int = 0
    last_at: float | None = None
    uses_incarnations: bool = False

    @property
    def incarnation(self) -> str:
        return f"{self.name}-{self.run}" if self.uses_incarnations else ""


@dataclass
class Truth:
    ok: int = 0
    bad: int = 0
    nodes: list[Node] = field(default_factory=list)


STEP = st.tuples(
    st.integers(0, 2),  # which node reports
    st.integers(1, 20_000),  # seconds since the previous report (any node)
    st.integers(0, 50), st.integers(0, 5),  # new good / bad requests
    st.sampled_from(["count", "count", "count", "new-agent", "drop", "stale"]),
    st.booleans(),  # flush afterwards
)


def _step(store: DurableMetricsStore, clock: Clock, truth: Truth, step: tuple) -> None:
    who, dt, ok, bad, kind, flush = step
    node = truth.nodes[who]
    clock.now += dt
    if kind == "new-agent" and not node.uses_incarnations:
        kind = "drop"  # without incarnations, only counters going down say so
    if kind == "stale" and node.last_at is not None:  # an old report arriving late
        store.add([sample(node.last_at - 1, node.ok + 999, node.bad + 9, node=node.name,
                          incarnation=node.incarnation)])
        return
    if kind == "new-agent" and node.last_at is not None:
        node.run += 1
        node.ok, node.bad = ok, bad
    elif kind == "drop" and node.ok + node.bad > 0:  # a restart seen as counters going down
        if node.ok:
            node.ok, node.bad = ok % node.ok, bad
        else:
            node.ok, node.bad = ok, bad % node.bad
        ok, bad = node.ok, node.bad
    else:
        node.ok, node.bad = node.ok + ok, node.bad + bad
    truth.ok, truth.bad = truth.ok + ok, truth.bad + bad
    node.last_at = clock.now
    store.add([sample(clock.now, node.ok, node.bad, node=node.name,
                      incarnation=node.incarnation)])
    if flush:
        store.flush()


def _check(store: DurableMetricsStore, truth: Truth, window: float) -> None:
    assert store.good_total(SVC, window) == (truth.ok, truth.ok + truth.bad)
    rates = store.rates(window)
    assert sum(r.requests for r in rates) == truth.ok + truth.bad
    assert sum(r.errors for r in rates) == truth.bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=40), reopen=st.integers(0, 40))
def test_whole_history_counts_every_request_across_resets_and_reopen(steps, reopen):
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        truth = Truth(nodes=[Node("a", uses_incarnations=True), Node("b"), Node("c")])
        store = DurableMetricsStore(d, clock=clock)
        try:
            for i, step in enumerate(steps):
                if i == reopen:
                    _check(store, truth, clock.now - T0 + 1)
                    store.close()
                    store = DurableMetricsStore(d, clock=clock)
                    _check(store, truth, clock.now - T0 + 1)
                _step(store, clock, truth, step)
            _check(store, truth, clock.now - T0 + 1)
        finally:
            store.close()
