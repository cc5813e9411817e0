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

Process-wide (the collector is): installed by ``shoal control-plane`` around its serving
control plane, not by :class:`~shoal.control.plane.ControlPlane`, which tests run several
of in one process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

NEVER = 2**31 - 1  # a generation-2 threshold no count reaches
YOUNG = 10_000  # allocations between young collections (CPython's default: 700)


class FullCollections:
    """Run ``collect()`` (a full collection) when ``activity()`` -- a counter of work
    done, e.g. proxies computed -- has not moved for ``quiet`` seconds and the last full
    collection is ``min_interval`` old, or once it is ``max_interval`` old."""

    def __init__(
        self,
        activity: Callable[[], int],
        *,
        quiet: float = 5.0,
        min_interval: float = 60.0,
        max_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], int] = gc.collect,
    ) -> None:
        self._activity = activity
        self._quiet = quiet
        self._min = min_interval
        self._max = max_interval
        self._clock = clock
        self._collect = collect
        self._last_full = clock()
        self._seen = activity()
        self._still_since = self._last_full
        self.full_collections = 0

    def due(self) -> bool:
        """Note the activity counter; is a full collection due now?"""
        now = self._clock()
        seen = self._activity()
        if seen != self._seen:
            self._seen, self._still_since = seen, now
        age = now - self._last_full
        return age >= self._max or (age >= self._min and now - self._still_since >= self._quiet)

    def collect(self) -> None:
        started = self._clock()
        found = self._collect()
        self._last_full = self._clock()
        self.full_collections += 1
        log.debug("full garbage collection", extra={
            "ms": round((self._last_full - started) * 1000), "collected": found})

    async def run(self) -> None:
        """Install the thresholds, collect when due until cancelled, then restore them."""
        before = gc.get_threshold()
        gc.set_threshold(YOUNG, before[1], NEVER)
        try:
            while True:
                await asyncio.sleep(min(1.0, self._quiet / 2))
                if self.due():
                    self.collect()
        finally:
            gc.set_threshold(*before)
