"""Full garbage collections off the push path (shoal.control.collector, ADR 0043)."""

from __future__ import annotations

import asyncio
import gc

from shoal.control.collector import NEVER, YOUNG, FullCollections


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_collections_wait_for_quiet_and_are_forced_at_the_longest_interval() -> None:
    clock, work, runs = Clock(), [0], []
    fc = FullCollections(lambda: work[0], quiet=5, min_interval=60, max_interval=300,
                         clock=clock, collect=lambda: runs.append(clock.now) or 0,
                         release=lambda: None, freeze=lambda: None, unfreeze=lambda: None)
    clock.now += 30  # quiet, but the last collection is too recent
    assert not fc.due()
    clock.now += 30  # 60 s old and quiet since the start
    assert fc.due()
    fc.collect()
    assert runs == [1060.0] and fc.full_collections == 1
    for _ in range(100):  # busy: a proxy computed every 2 s
        clock.now += 2
        work[0] += 1
        if fc.due():
            fc.collect()
    assert runs == [1060.0]  # 200 s busy: none yet
    for _ in range(50):
        clock.now += 2
        work[0] += 1
        if fc.due():
            fc.collect()
    assert runs == [1060.0, 1360.0]  # forced when 300 s old, busy or not
    clock.now += 59
    assert not fc.due()  # quiet, but the last collection is 59 s old
    work[0] += 1
    clock.now += 1
    assert not fc.due()  # 60 s old, but busy a moment ago
    clock.now += 5
    assert fc.due()  # quiet for 5 s

def test_native_memory_is_released_once_per_quiet_period_and_after_full_collections(
) -> None:
    """Freed native memory (a push's transient buffers) goes back to the OS when the
    plane has been still for ``quiet`` seconds after some work, once, not again and
    again while idle; and after every full collection."""
    clock, work, released = Clock(), [0], []
    fc = FullCollections(lambda: work[0], quiet=5, min_interval=60, max_interval=300,
                         clock=clock, collect=lambda: 0,
                         release=lambda: released.append(clock.now),
                         freeze=lambda: None, unfreeze=lambda: None)
    clock.now += 10
    assert not fc.release_due()  # nothing done since the start
    for _ in range(3):  # a push
        work[0] += 1
        clock.now += 1
        assert not fc.due() and not fc.release_due()
    clock.now += 4
    assert not fc.release_due()  # still for 4 s
    clock.now += 1
    assert fc.release_due()
    fc.release()
    assert released == [1018.0]
    clock.now += 30
    assert not fc.release_due()  # idle since: nothing new to give back
    clock.now += 30
    assert fc.due()
    fc.collect()
    assert released == [1018.0, 1078.0] and fc.releases == 2


def test_survivors_are_frozen_and_thawed_for_a_complete_collection_when_quiet() -> None:
    """What a full collection leaves is frozen, so the next walks only newer objects;
    every ``thaw_interval`` a collection first thaws everything (cycles among frozen
    objects are found then), when quiet, or regardless at twice the interval."""
    clock, work, calls = Clock(), [0], []
    fc = FullCollections(lambda: work[0], quiet=5, min_interval=60, max_interval=300,
                         thaw_interval=900, clock=clock,
                         collect=lambda: calls.append("collect") or 0,
                         release=lambda: None, freeze=lambda: calls.append("freeze"),
                         unfreeze=lambda: calls.append("unfreeze"))
    clock.now += 60
    assert fc.due()
    fc.collect()
    assert calls == ["collect", "freeze"]  # not yet a complete one
    clock.now += 900  # quiet all along: the thaw is due
    calls.clear()
    fc.collect()
    assert calls == ["unfreeze", "collect", "freeze"] and fc.complete_collections == 1
    calls.clear()
    for _ in range(450):  # 900 s of constant churn: forced collections, partial ones
        clock.now += 2
        work[0] += 1
        if fc.due():
            fc.collect()
    assert "unfreeze" not in calls and calls.count("collect") == 3
    for _ in range(500):  # still busy, the last complete one 1,800 s old: complete anyway
        clock.now += 2
        work[0] += 1
        if fc.due():
            fc.collect()
    assert calls.count("unfreeze") == 1 and fc.complete_collections == 2


async def test_run_installs_the_thresholds_and_restores_them() -> None:
    before = gc.get_threshold()
    fc = FullCollections(lambda: 0, quiet=0.02, min_interval=0.05, max_interval=10)
    task = asyncio.create_task(fc.run())
    await asyncio.sleep(0)
    assert gc.get_threshold() == (YOUNG, before[1], NEVER)
    while fc.full_collections == 0:  # a real collection when quiet
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert gc.get_threshold() == before
