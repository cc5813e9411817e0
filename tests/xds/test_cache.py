"""SnapshotCache and the per-message pack cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.xds.cache import PackCache, SnapshotCache
from shoal.xds.cache.packing import ChangeCache, ResponseCache, ResponseKey, content_nonce
from shoal.xds.types import CLUSTER, Overlay, ProxySnapshot, Resources, names_within


def snap(*names: str, shared: dict[str, Any] | None = None) -> ProxySnapshot:
    shared = shared if shared is not None else {}
    items = {n: shared.setdefault(n, cluster_pb2.Cluster(name=n)) for n in names}
    return ProxySnapshot(resources={CLUSTER: Resources.of(items)})


def test_set_get_remove() -> None:
    cache = SnapshotCache()
    s = snap("a")
    assert cache.get("n") is None
    cache.set("n", s)
    assert cache.get("n") is s
    assert cache.node_ids() == ["n"]
    cache.remove("n")
    assert cache.get("n") is None
    cache.remove("n")  # idempotent


async def test_watch_is_latest_wins() -> None:
    cache = SnapshotCache()
    first, s2, s3 = snap("a"), snap("b"), snap("c")
    cache.set("n", first)
    seen: list[ProxySnapshot | None] = []
    got_one = asyncio.Event()

    async def consume() -> None:
        async for s in cache.watch("n"):
            seen.append(s)
            got_one.set()
            if s is None:
                return

    task = asyncio.create_task(consume())
    await got_one.wait()
    got_one.clear()
    cache.set("n", s2)  # overwritten before the consumer runs: never seen
    cache.set("n", s3)
    await got_one.wait()
    assert seen == [first, s3]
    cache.remove("n")
    await asyncio.wait_for(task, 10)
    assert seen == [first, s3, None]


async def test_watch_before_first_snapshot() -> None:
    cache = SnapshotCache()
    it = aiter(cache.watch("late"))
    pending = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0)
    assert not pending.done()
    s = snap("a")
    cache.set("late", s)
    assert await asyncio.wait_for(pending, 10) is s


def test_pack_once_per_message_object() -> None:
    packs = PackCache()
    shared: dict[str, Any] = {}
    c = snap("a", shared=shared).get(CLUSTER).items["a"]
    p1, p2 = packs.get(c), packs.get(c)
    assert p1 is p2 and packs.hits == 1 and packs.misses == 1
    assert p1.any.type_url == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert cluster_pb2.Cluster.FromString(p1.any.value) == c
    twin = cluster_pb2.Cluster(name="a")  # equal content, other object: same version
    assert packs.get(twin).version == p1.version
    assert packs.get(cluster_pb2.Cluster(name="b")).version != p1.version


def test_sweep_keeps_only_live_messages() -> None:
    cache = SnapshotCache()
    shared: dict[str, Any] = {}
    for i in range(100):  # 100 proxies share the same two clusters
        cache.set(f"n{i}", snap("a", "b", shared=shared))
    for s in (cache.get(f"n{i}") for i in range(100)):
        assert s is not None
        for m in s.get(CLUSTER).items.values():
            cache.packed(m)
    assert len(cache.packs) == 2 and cache.packs.misses == 2
    old = cache.get("n0")
    assert old is not None
    cache.packed(cluster_pb2.Cluster(name="orphan"))
    assert cache.sweep() == 1
    assert len(cache.packs) == 2


def test_maybe_sweep_waits_until_replaced_messages_add_up() -> None:
    """After each push the sync loop calls maybe_sweep: a few replaced resources are left
    for later (a sweep walks every snapshot), megabytes of them are freed."""
    cache = SnapshotCache()
    big = "x" * 100_000  # ~100 kB per packed cluster

    def push(i: int) -> None:
        c = cluster_pb2.Cluster(name=f"c{i}", alt_stat_name=big)
        cache.set("n", ProxySnapshot(resources={CLUSTER: Resources.of({"c": c})}))
        cache.packed(c)

    push(0)
    cache.sweep()
    for i in range(1, 5):  # 0.4 MB replaced: not worth a sweep yet
        push(i)
        assert cache.maybe_sweep() == 0
    assert len(cache.packs) == 5
    for i in range(5, 200):  # 20 MB replaced: swept, only the live one stays
        push(i)
        cache.maybe_sweep()
    assert cache.packs.bytes < 17 << 20
    cache.sweep()
    assert len(cache.packs) == 1 and cache.packs.bytes > 100_000


def test_responses_are_shared_by_content_and_bounded_by_bytes() -> None:
    responses = ResponseCache(max_bytes=100)
    calls: list[str] = []

    def build(text: str) -> Callable[[str], bytes]:
        return lambda nonce: calls.append(nonce) or text.encode() * 10

    def key_of(version: str, names: frozenset[str] | None = None) -> ResponseKey:
        return ("sotw", CLUSTER, version, names, frozenset())

    key = key_of("v1")
    nonce, out = responses.get(key, build("abcd"))
    assert out == b"abcd" * 10 and calls == [nonce] == [content_nonce(key)]
    assert responses.get(key, build("abcd")) == (nonce, out) and len(calls) == 1  # once
    named = key_of("v1", frozenset({"a"}))
    assert responses.get(named, build("efgh"))[0] not in (nonce, "")  # other content
    assert len(responses) == 2 and responses.bytes == 80
    responses.get(key_of("v3"), build("ijk"))  # 30 more: over 100, start afresh
    assert len(responses) == 1 and responses.bytes == 30
    assert responses.get(key_of("big"), build("x" * 11))[1] == b"x" * 110
    assert len(responses) == 0 and responses.bytes == 0  # never kept


# -- overlays: one proxy's own items on a shared mapping, compared by parts -----------------
_NAMES = [f"c{i}" for i in range(8)]
_VERSIONS = [cluster_pb2.Cluster(name="x", connect_timeout={"seconds": s}) for s in range(3)]
_mapping = st.dictionaries(st.sampled_from(_NAMES), st.sampled_from(range(3)), max_size=8)
# one cache for every example too: what it kept from earlier moves must not leak into
# later answers (its keys are object identities and own names)
_PACKS = PackCache()
_LONG_LIVED = ChangeCache(_PACKS.get, max_entries=64, max_own_names=100, min_cached=0)


def _messages(spec: dict[str, int], pool: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """Names to messages; equal (name, version) pairs are one object, as in snapshots,
    and a fresh object of equal content is made by asking with another pool."""
    return {n: pool.setdefault((n, v), cluster_pb2.Cluster(
        name=n, connect_timeout=_VERSIONS[v].connect_timeout)) for n, v in spec.items()}


@settings(max_examples=300, deadline=None)
@given(old_base=_mapping, old_own=_mapping, new_base=_mapping, new_own=_mapping,
       has=st.none() | st.frozensets(st.sampled_from(_NAMES)),
       names=st.none() | st.frozensets(st.sampled_from(_NAMES)),
       fresh=st.booleans())
def test_overlay_diff_equals_the_diff_of_the_merged_mappings(
        old_base: dict[str, int], old_own: dict[str, int], new_base: dict[str, int],
        new_own: dict[str, int], has: frozenset[str] | None, names: frozenset[str] | None,
        fresh: bool) -> None:
    pool: dict[tuple[str, int], Any] = {}
    old = Overlay(_messages(old_base, pool), _messages(old_own, pool))
    # fresh: the new own items are other objects of equal content (compared by version)
    new = Overlay(_messages(new_base, pool), _messages(new_own, {} if fresh else pool))
    if has is not None:
        has = has & frozenset(old)  # a client holds only what it was sent
    packs = PackCache()
    by_parts = ChangeCache(packs.get).diff(old, has, new, names)
    merged = ChangeCache(packs.get).diff(dict(old.items()), has, dict(new.items()), names)
    assert by_parts == merged
    assert _LONG_LIVED.diff(old, has, new, names) == merged
    # the mapping itself reads as the merged dict, in its order
    flat = {**old.base, **old.own}
    assert list(old) == list(flat) and len(old) == len(flat)
    assert all(old[n] is flat[n] and old.get(n) is flat[n] and n in old for n in flat)
    assert old.get("nope") is None and "nope" not in old
    assert names_within(old, new) == (old.keys() <= new.keys())


def test_overlay_diff_shares_the_shared_diff_when_own_items_take_no_part() -> None:
    pool: dict[tuple[str, int], Any] = {}
    old_base = _messages({"a": 0, "b": 0}, pool)
    new_base = _messages({"a": 1, "b": 0}, pool)
    own = _messages({"inbound": 0}, pool)
    changes = ChangeCache(PackCache().get, min_cached=0)
    first = changes.diff(Overlay(old_base, own), None, Overlay(new_base, own), None)
    second = changes.diff(Overlay(old_base, dict(own)), None, Overlay(new_base, dict(own)), None)
    assert first.updated == {"a"} and first is second  # one object for every proxy
    moved = changes.diff(Overlay(old_base, own), None,
                         Overlay(new_base, _messages({"inbound": 1}, pool)), None)
    assert moved.updated == {"a", "inbound"} and moved is not first
    # another proxy whose own item moved the same way gets that same Diff object (the
    # response cache then matches its names by identity)
    again = changes.diff(Overlay(old_base, dict(own)), None,
                         Overlay(new_base, _messages({"inbound": 1}, {})), None)
    assert again is moved


def test_diffs_of_small_mappings_are_not_kept() -> None:
    """Each proxy configuration's own listeners (two resources) would fill the diff cache
    in a connect storm and push out the large shared diffs, which then came back as new,
    equal name sets that every stream's response lookup compared name by name."""
    pool: dict[tuple[str, int], Any] = {}
    changes = ChangeCache(PackCache().get, min_cached=4)
    small_old, small_new = _messages({"a": 0}, pool), _messages({"a": 1}, pool)
    assert changes.diff(small_old, None, small_new, None).updated == {"a"}
    assert len(changes._diffs) == 0
    big_old = _messages({n: 0 for n in _NAMES[:4]}, pool)
    big_new = _messages({n: 1 for n in _NAMES[:4]}, pool)
    first = changes.diff(big_old, None, big_new, None)
    assert changes.diff(big_old, None, big_new, None) is first and len(changes._diffs) == 1

