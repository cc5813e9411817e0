"""Equal large requests are parsed once and their names held once (issue 13: the
connect storm's EDS subscriptions, 3,000 names per proxy at 1,000 services, and every
state-of-the-world ACK repeating them)."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from shoal.xds.cache.bounded import Bounded, ByIdentity
from shoal.xds.server import requests
from shoal.xds.server.requests import RequestCache, names_of, shared_names, subscribed_after
from shoal.xds.types import ENDPOINT

NAMES = [f"outbound|8080||svc-{i}.default.svc.cluster.local" for i in range(3000)]


def request(names: list[str], nonce: str = "") -> bytes:
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, response_nonce=nonce, resource_names_subscribe=names
    ).SerializeToString()


def test_equal_large_requests_are_one_message_with_one_set_of_names() -> None:
    cache = RequestCache(discovery_pb2.DeltaDiscoveryRequest)
    a, b = cache.parse(request(NAMES)), cache.parse(bytes(bytearray(request(NAMES))))
    assert a is b
    sub, unsub = names_of(a)
    assert sub == frozenset(NAMES) and not unsub
    assert names_of(b)[0] is sub
    other = cache.parse(request(NAMES[:-1]))
    assert other is not a and names_of(other)[0] == frozenset(NAMES[:-1])


def test_small_requests_are_parsed_each_time() -> None:
    cache = RequestCache(discovery_pb2.DeltaDiscoveryRequest)
    small = request(NAMES[:3], nonce="n1")
    assert cache.parse(small) is not cache.parse(small)
    assert names_of(cache.parse(small)) == (frozenset(NAMES[:3]), frozenset())


def test_the_cache_is_bounded_by_bytes() -> None:
    raw = request(NAMES)
    cache = RequestCache(discovery_pb2.DeltaDiscoveryRequest, max_bytes=2 * len(raw) + 10)
    first = cache.parse(raw)
    for i in range(5):
        cache.parse(request(NAMES, nonce=str(i)))
    assert cache.bytes <= 2 * len(raw) + 10
    assert cache.parse(raw) is not first  # (started over)


def test_a_malformed_request_is_refused_and_not_kept() -> None:
    cache = RequestCache(discovery_pb2.DeltaDiscoveryRequest, min_size=1)
    with pytest.raises(DecodeError):
        cache.parse(b"\xff" * 5000)
    assert cache.bytes == 0


def test_names_read_once_are_bounded() -> None:
    parsed = [discovery_pb2.DeltaDiscoveryRequest.FromString(request(NAMES, nonce=str(i)))
              for i in range(60)]  # 180,000 names in all
    for req in parsed:
        assert names_of(req)[0] == frozenset(NAMES)
    assert requests._NAMES_OF.max_weight is not None and requests._NAMES_OF.max_entries is not None
    assert requests._NAMES_OF.weight <= requests._NAMES_OF.max_weight
    assert len(requests._NAMES_OF) <= requests._NAMES_OF.max_entries


def test_interned_name_sets_are_bounded_by_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requests, "_NAMES", Bounded(max_entries=4096, max_weight=10_000))
    for i in range(10):  # 30,000 names in distinct sets
        shared = requests.shared_names([f"{i}-{n}" for n in NAMES])
        assert len(shared) == len(NAMES)
        assert requests.shared_names(shared) is shared  # equal sets: one object
    assert requests._NAMES.weight <= 10_000


def test_equal_state_of_the_world_acks_are_one_message_read_without_change() -> None:
    """Every SotW ACK repeats the whole subscription; with content nonces it is the same
    bytes from every proxy of a scope: one message, one set, left as it came (it is
    shared by the streams reading it)."""
    cache = RequestCache(discovery_pb2.DiscoveryRequest)
    ack = discovery_pb2.DiscoveryRequest(
        type_url=ENDPOINT, version_info="v1", response_nonce="n1", resource_names=NAMES)
    a, b = cache.parse(ack.SerializeToString()), cache.parse(ack.SerializeToString())
    assert a is b and cache.bytes == ack.ByteSize()
    (names,) = names_of(a)
    assert names == frozenset(NAMES) and names_of(b) == (names,)
    assert a == ack  # nothing read from it was cleared


def test_a_large_subscription_move_is_worked_out_once() -> None:
    """Thousands of streams holding the same shared set and sending the same request end
    up holding one shared set, worked out once; the result is the set arithmetic."""
    held = shared_names(["inbound|8080||"])
    (more,) = names_of(discovery_pb2.DeltaDiscoveryRequest.FromString(request(NAMES)))[:1]
    first = subscribed_after(held, more, frozenset())
    assert first == held | frozenset(NAMES)
    assert subscribed_after(held, more, frozenset()) is first
    gone = shared_names(NAMES[:10])
    after = subscribed_after(first, frozenset(), gone)
    assert after == (held | frozenset(NAMES)) - gone
    assert subscribed_after(held, frozenset({"*", "x"}), frozenset()) == held | {"x"}
    assert requests._AFTER.max_weight is not None and requests._AFTER.max_entries is not None


def test_a_shared_set_is_kept_under_itself() -> None:
    """Asked again for a shared set (most calls), the lookup must meet that very object
    first, not an equal one it would compare name by name."""
    shared = shared_names(list(NAMES[:500]))
    assert shared_names(set(NAMES[:500])) is shared and shared_names(shared) is shared
    assert [k for k in requests._NAMES._entries if k == shared] == [shared]
    assert next(k for k in requests._NAMES._entries if k == shared) is shared



def test_values_by_identity_are_found_only_for_the_very_objects() -> None:
    """The memo behind the shared diffs, name sets and moves: equal but distinct objects,
    another ``extra`` or a dropped entry are misses; it holds what it was given."""
    memo: ByIdentity[str] = ByIdentity(max_entries=2, max_weight=10)
    a, b = frozenset({"x"}), frozenset({"y"})
    memo.put((a, b), "ab", extra="e")
    assert memo.get((a, b), "e") == "ab"
    assert memo.get((a, b)) is None  # another extra
    assert memo.get((frozenset({"x"}), b), "e") is None  # equal, not the same object
    assert memo.get((b, a), "e") is None
    memo.put((a,), "a")
    memo.put((b,), "b")  # a third entry: it starts over
    assert len(memo) == 1 and memo.get((a, b), "e") is None and memo.get((b,)) == "b"
    memo.put((a,), "heavy", weight=11)  # heavier than the whole bound: not kept
    assert memo.get((a,)) is None and memo.weight <= 10
