"""Federation: answers are reused for a short while, so a polling dashboard does not ask
every remote cluster on every refresh; the trace lists of all clusters merge into one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.multicluster.federation import Federation, RemoteEdges
from shoal.multicluster.remote import RemoteClusters
from shoal.multicluster.view import ClusterView
from shoal.store.memory import MemoryStore
from shoal.telemetry.traces import merge_summaries


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


def _summary(tid: str, start_ms: float, duration_ms: float, services: list[str], spans: int,
             root: str, errors: int = 0, cluster: str | None = None) -> dict:
    t = {"trace_id": tid, "root": f"{root} /", "root_service": root, "services": services,
         "spans": spans, "errors": errors, "start_ns": int(start_ms * 1e6),
         "duration_ms": duration_ms}
    return t if cluster is None else {**t, "cluster": cluster}


def test_a_trace_across_clusters_is_one_line_of_the_merged_list() -> None:
    local = [_summary("t2", 2000, 50, ["productpage"], 2, "productpage"),
             _summary("t1", 1000, 10, ["details"], 1, "details")]
    remote = [  # b saw the rest of t2 (started 5 ms later, ended 10 ms after ours), and t3
        _summary("t3", 3000, 5, ["ratings"], 2, "ratings", errors=1, cluster="b"),
        _summary("t2", 2005, 55, ["ratings", "reviews"], 4, "reviews", cluster="b")]
    merged = merge_summaries(local, remote, limit=10, local_cluster="a")
    assert [t["trace_id"] for t in merged] == ["t3", "t2", "t1"]  # newest first
    t3, t2, t1 = merged
    assert t3["clusters"] == ["b"] and t3["errors"] == 1
    assert t2["clusters"] == ["a", "b"]
    assert t2["services"] == ["productpage", "ratings", "reviews"]
    assert t2["spans"] == 6
    assert t2["root_service"] == "productpage"  # the earliest part is the root
    assert t2["start_ns"] == 2_000_000_000 and t2["duration_ms"] == 60
    assert t1["clusters"] == ["a"] and "cluster" not in t1
    assert [t["trace_id"] for t in merge_summaries(local, remote, 2, "a")] == ["t3", "t2"]
