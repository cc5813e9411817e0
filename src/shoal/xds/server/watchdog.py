"""One watchdog for all of a server's streams: a stream whose client does not take a
response within ``send_timeout``, or leaves one unanswered for ``ack_timeout``, is cut.

One task checks every live stream every ``period`` seconds (a quarter of the shorter
timeout), instead of a sleeping task per stream: at 5,000 proxies those were 5,000
timers firing ~670 times a second on an idle control plane. The task runs while at least
one stream is watched: started by the first :meth:`watch`, cancelled when the last
stream is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from shoal.xds.server.stream import SlowClient


class Watched(Protocol):
    def overdue(self, now: float) -> SlowClient | None: ...


class Watchdog:
    def __init__(self, period: float) -> None:
        self.period = period
        self._streams: dict[int, tuple[Watched, Callable[[SlowClient], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def watch(self, key: int, stream: Watched, cut: Callable[[SlowClient], None]) -> None:
        """Check ``stream`` from now on; ``cut(reason)`` is called once if it is overdue
        (then it is no longer watched)."""
        self._streams[key] = (stream, cut)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="xds-watchdog")

    def forget(self, key: int) -> None:
        self._streams.pop(key, None)
        if not self._streams and self._task is not None:
            self._task.cancel()
            self._task = None

    def check(self, now: float) -> None:
        """Cut every watched stream overdue at loop time ``now``."""
        late = [(key, cut, reason) for key, (stream, cut) in self._streams.items()
                if (reason := stream.overdue(now)) is not None]
        for key, cut, reason in late:
            self._streams.pop(key, None)
            cut(reason)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._streams:
            await asyncio.sleep(self.period)
            self.check(loop.time())
