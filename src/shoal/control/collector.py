"""The control plane's full garbage collections, moved off the push path (ADR 0043).

CPython's cyclic collector runs a full (generation 2) collection whenever the objects
that survived the young collections since the last one reach a quarter of the old ones.
A control plane serving thousands of proxies replaces a good share of its objects on
every push (each proxy's new snapshot), so that rule fired about once per push, and a
full collection walks every tracked object: ~330 ms at 2,000 proxies over 1,000
services, finding nothing (the mesh's data is freed by reference counting), while every
stream of the push waited. Here the young collections run as before, less often (a
larger first threshold); full collections run when no proxy has been computed and no
response written for ``quiet`` seconds, at most every ``min_interval``, and at the latest every
``max_interval`` whatever the load, so cyclic garbage stays bounded.

What a full collection finds alive is frozen (``gc.freeze``: not scanned again), so the
next one walks only what was made since: in process at 5,000 proxies over 1,000
services, a full collection after a change took 90 ms, 9 ms with the rest frozen (the
serving control plane's took 0.6 to 1.3 s, its streams' objects included). Cycles among
frozen objects (a stream's tasks once it closes) wait for the next complete collection:
every ``thaw_interval`` the frozen objects are thawed first, when the plane is quiet (or
regardless once twice that long has passed).

Once per quiet period (and after each full collection) the freed native memory goes
back to the operating system (``release``: glibc's ``malloc_trim``). A push's transient
buffers -- state-of-the-world ACKs repeat a proxy's whole subscription, 158 kB each at
1,000 services, thousands arriving at once -- are allocated from glibc's heap arenas
(its mmap threshold rises with the first large frees) and, freed, stayed in the process:
its RSS rose by ~270 MB a change at 5,000 proxies and did not come down.

Process-wide (the collector is): installed by ``shoal control-plane`` around its serving
control plane, not by :class:`~shoal.control.plane.ControlPlane`, which tests run several
of in one process.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

NEVER = 2**31 - 1  # a generation-2 threshold no count reaches
YOUNG = 100_000  # allocations between young collections (CPython's default: 700)


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (free heap pages back to the OS); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is None:
        return lambda: 0
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


release_native_memory = _malloc_trim()


class FullCollections:
    """Run ``collect()`` (a full collection) when ``activity()`` -- a counter of work
    done, e.g. proxies computed -- has not moved for ``quiet`` seconds and the last full
    collection is ``min_interval`` old, or once it is ``max_interval`` old. ``release()``
    (native memory back to the OS) runs after each full collection and once whenever
    the activity has been still for ``quiet`` seconds since it last ran."""

    def __init__(
        self,
        activity: Callable[[], int],
        *,
        quiet: float = 5.0,
        min_interval: float = 60.0,
        max_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], int] = gc.collect,
        release: Callable[[], object] = release_native_memory,
        thaw_interval: float = 900.0,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
    ) -> None:
        self._activity = activity
        self._quiet = quiet
        self._min = min_interval
        self._max = max_interval
        self._clock = clock
        self._collect = collect
        self._release = release
        self._thaw = thaw_interval
        self._freeze, self._unfreeze = freeze, unfreeze
        self._last_full = clock()
        self._last_thaw = self._last_full
        self._seen = activity()
        self._still_since = self._last_full
        self._released = self._seen  # the activity when native memory was last released
        self.full_collections = 0
        self.complete_collections = 0  # of them, those that thawed the frozen objects first
        self.releases = 0

    def _note(self) -> float:
        """Note the activity counter; the time now."""
        now = self._clock()
        seen = self._activity()
        if seen != self._seen:
            self._seen, self._still_since = seen, now
        return now

    def due(self) -> bool:
        """Is a full collection due now?"""
        now = self._note()
        age = now - self._last_full
        return age >= self._max or (age >= self._min and now - self._still_since >= self._quiet)

    def release_due(self) -> bool:
        """Has there been activity since the last release, and none for ``quiet`` s?"""
        now = self._note()
        return self._released != self._seen and now - self._still_since >= self._quiet

    def collect(self) -> None:
        """A full collection; of everything (thawing the frozen objects first) when the
        last complete one is ``thaw_interval`` old and the plane is quiet, or twice that
        old; then what survived is frozen."""
        started = self._clock()
        since_thaw = started - self._last_thaw
        quiet = started - self._still_since >= self._quiet
        complete = since_thaw >= self._thaw and (quiet or since_thaw >= 2 * self._thaw)
        if complete:
            self._unfreeze()
            self._last_thaw = started
            self.complete_collections += 1
        found = self._collect()
        self._freeze()
        self._last_full = self._clock()
        self.full_collections += 1
        log.debug("full garbage collection", extra={
            "ms": round((self._last_full - started) * 1000), "collected": found,
            "complete": complete})
        self.release()

    def release(self) -> None:
        started = self._clock()
        self._release()
        self._released = self._seen
        self.releases += 1
        log.debug("native memory released", extra={
            "ms": round((self._clock() - started) * 1000)})

    async def run(self) -> None:
        """Install the thresholds, collect when due until cancelled, then restore them."""
        before = gc.get_threshold()
        gc.set_threshold(YOUNG, before[1], NEVER)
        try:
            while True:
                await asyncio.sleep(min(1.0, self._quiet / 2))
                if self.due():
                    self.collect()
                elif self.release_due():
                    self.release()
        finally:
            gc.set_threshold(*before)
            self._unfreeze()  # (what outlives the collector is the process's to collect)
