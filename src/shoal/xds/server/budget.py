"""One budget of response bytes being written at once, shared by every ADS stream.

When thousands of proxies connect together, each stream's first responses (the whole
CDS and SRDS of a large mesh, megabytes each) would be handed to gRPC at once, which
copies each into its own buffers until the client has read it: the connect storm's
memory peak. A stream takes a *lease* on its response's size before writing it and
gives it back when the write completes, so the bytes gRPC holds for writes in progress
stay within ``limit`` (a response larger than the whole budget is written alone).

A lease counts for at most ``hold`` seconds: a client that stops reading keeps its own
write pending (the stream's ``send_timeout`` cuts it) but not the budget, so a stuck
proxy never holds the others back for longer than ``hold``. Waiting streams are served
first come, first served. Leases lapse lazily, when someone waits: the common case (the
budget not exhausted) costs no timer per write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass
class _Waiter:
    size: int
    ready: asyncio.Future[None]


class WriteBudget:
    def __init__(self, limit: int = 128 << 20, hold: float = 2.0) -> None:
        self.limit = limit
        self.hold = hold
        self.used = 0
        self._leases: dict[int, tuple[int, float]] = {}  # token -> (size, since): oldest first
        self._waiting: deque[_Waiter] = deque()
        # (stats) the most bytes leased at once, how many leases had to wait, how many
        # were granted (also the next lease's token)
        self.peak = 0
        self.waited = 0
        self.granted = 0

    async def acquire(self, size: int) -> int:
        """Lease ``size`` bytes (at most ``limit``), waiting in turn; the token is for
        :meth:`release`."""
        size = min(max(size, 0), self.limit)
        loop = asyncio.get_running_loop()
        if self._waiting or self.used + size > self.limit:
            await self._wait(size, loop)
        else:
            self._take(size)
        token = self.granted
        self.granted += 1
        self._leases[token] = (size, loop.time())
        return token

    def release(self, token: int) -> None:
        """Give a lease back (nothing if it had lapsed already)."""
        lease = self._leases.pop(token, None)
        if lease is not None:
            self.used -= lease[0]
            self._wake()

    async def _wait(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.waited += 1
        waiter = _Waiter(size, loop.create_future())
        self._waiting.append(waiter)
        try:
            while not waiter.ready.done():
                oldest = next(iter(self._leases.values()), None)
                timeout = None if oldest is None else max(
                    0.0, oldest[1] + self.hold - loop.time())
                await asyncio.wait({waiter.ready}, timeout=timeout)
                if not waiter.ready.done():
                    self._lapse(loop.time())
        except asyncio.CancelledError:
            if waiter.ready.done() and not waiter.ready.cancelled():
                self.used -= size  # granted as it was cancelled: give it back
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            self._wake()
            raise

    def _lapse(self, now: float) -> None:
        """Stop counting the leases held for ``hold`` or longer."""
        while self._leases:
            token, (size, since) = next(iter(self._leases.items()))
            if now - since < self.hold:
                break
            del self._leases[token]
            self.used -= size
        self._wake()

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0].size <= self.limit:
            waiter = self._waiting.popleft()
            if not waiter.ready.done():
                self._take(waiter.size)
                waiter.ready.set_result(None)


__all__ = ["WriteBudget"]
