"""Federation answers are reused for a short while, so a polling dashboard does not ask
every remote cluster on every refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.multicluster.federation import Federation, RemoteEdges
from shoal.multicluster.remote import RemoteClusters
from shoal.multicluster.view import ClusterView
from shoal.store.memory import MemoryStore


class _Counting(Federation):
    """Counts how often the remotes would have been asked."""

    def __init__(self, now: list[float], data_dir: Path) -> None:
        remotes = RemoteClusters(ClusterView(MemoryStore()), data_dir, lambda: None)
        super().__init__(remotes, lambda: None, cache_seconds=2.0, clock=lambda: now[0])
        self.fetches = 0

    async def _fetch_edges(self, window: float) -> RemoteEdges:
        self.fetches += 1
        return RemoteEdges(clusters={"b": "ok"})


def test_edges_are_reused_for_two_seconds_per_window(tmp_path: Path) -> None:
    now = [100.0]
    fed = _Counting(now, tmp_path)

    async def run() -> None:
        await fed.edges(60)
        now[0] += 1.5
        assert (await fed.edges(60)).clusters == {"b": "ok"}
        assert fed.fetches == 1
        await fed.edges(300)  # another window: its own answer
        assert fed.fetches == 2
        now[0] += 1.0
        await fed.edges(60)  # 2.5 s old: asked again
        assert fed.fetches == 3

    asyncio.run(run())
