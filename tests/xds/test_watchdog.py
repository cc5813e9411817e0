"""One watchdog task for all of a server's streams (shoal.xds.server.watchdog)."""

from __future__ import annotations

import asyncio

from shoal.xds.server.stream import SlowClient
from shoal.xds.server.watchdog import Watchdog


class Stream:
    def __init__(self, late_after: float) -> None:
        self.late_after = late_after

    def overdue(self, now: float) -> SlowClient | None:
        return SlowClient(f"late at {now:g}") if now > self.late_after else None


async def test_overdue_streams_are_cut_once_and_the_task_ends_with_the_last_stream() -> None:
    dog, cuts = Watchdog(period=3600), []
    for key, late in ((1, 10.0), (2, 20.0), (3, 30.0)):
        dog.watch(key, Stream(late), lambda r, key=key: cuts.append((key, str(r))))
    task = dog._task
    assert task is not None and not task.done()  # one task for all of them
    dog.check(5.0)
    assert cuts == []
    dog.check(25.0)
    assert cuts == [(1, "late at 25"), (2, "late at 25")] and len(dog) == 1
    dog.check(26.0)  # already cut: not again
    assert len(cuts) == 2
    dog.forget(3)
    await asyncio.sleep(0)
    assert task.cancelled() and dog._task is None


async def test_the_task_checks_every_period() -> None:
    dog, cuts = Watchdog(period=0.01), []
    dog.watch(1, Stream(-1.0), cuts.append)  # overdue at once
    while not cuts:
        await asyncio.sleep(0.01)
    assert "late" in str(cuts[0]) and len(dog) == 0
    dog.forget(1)
