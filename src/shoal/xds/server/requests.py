"""What streams read from requests, read once for all of them.

Envoy's requests are mostly the same across proxies: every proxy of a scope subscribes
to the same thousands of EDS names, and in state of the world repeats that whole
subscription in every ACK (158 kB at 1,000 services), with the same version and, shoal's
nonces naming content (``packing.content_nonce``), the same nonce. Parsing each of them
per stream, and turning its names into fresh strings and sets, was a tenth of the connect
storm's CPU in delta, and in state of the world the per-change garbage that grew the
process (docs/benchmarks.md). So:

* :class:`RequestCache` parses equal large requests once into one read-only message
  (streams never modify a request);
* :func:`names_of` reads a request's name lists once per message object, into
  :func:`shared_names` sets: equal name sets are one frozenset of interned names.

Every cache here is bounded (:class:`~shoal.xds.cache.bounded.Bounded`): a client sending
ever new large requests cannot grow them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Generic, TypeVar

from envoy.service.discovery.v3 import discovery_pb2

from shoal.xds.cache.bounded import Bounded, ByIdentity

Request = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
R = TypeVar("R", discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)

# Equal name sets: one shared frozenset of interned names, not fresh strings per stream
# (~65 KB per proxy with 400 clusters). At most 4,096 distinct sets and 2,000,000 names.
_NAMES: Bounded[frozenset[str], frozenset[str]] = Bounded(max_entries=4096,
                                                         max_weight=2_000_000)
# A request naming at least this many resources has its names read once for every stream
# it reaches as the same object.
_MANY = 256
# a request -> its name sets: at most 64 requests and 100,000 names in them all (bounds
# what they hold alive)
_NAMES_OF: ByIdentity[tuple[frozenset[str], ...]] = ByIdentity(max_entries=64,
                                                               max_weight=100_000)


def shared_names(names: Iterable[str]) -> frozenset[str]:
    """The one shared set equal to ``names``. Kept under itself: asked again for it (most
    calls), the lookup meets it first and matches by identity instead of comparing every
    name (27 µs at 3,000 names when the set was kept under the one first asked for)."""
    key = frozenset(names)
    got = _NAMES.get(key)
    if got is None:
        got = frozenset(sys.intern(n) for n in key)
        _NAMES.put(got, got, len(got))
    return got


# (held, subscribed, unsubscribed) -> the names after: what thousands of streams holding
# the same shared set and sending the same request end up subscribed to, worked out
# once. At most 1,024 moves and 1,000,000 names.
_AFTER: ByIdentity[frozenset[str]] = ByIdentity(max_entries=1024, max_weight=1_000_000)


def subscribed_after(held: frozenset[str], subscribe: frozenset[str],
                     unsubscribe: frozenset[str]) -> frozenset[str]:
    """The names a delta stream holding ``held`` is subscribed to after a request
    subscribing and unsubscribing these (``*`` is the caller's to read first), as a
    shared set. Large moves are worked out once for every stream making them: a proxy's
    route subscription grows by a thousand names when its scopes arrive, the same
    thousand for every proxy of a scope."""
    large = bool(held) and len(held) + len(subscribe) >= _MANY
    move = (held, subscribe, unsubscribe)
    if large and (got := _AFTER.get(move)) is not None:
        return got
    names = held | subscribe if held else subscribe
    if unsubscribe or "*" in names:
        names = names - unsubscribe - {"*"}
    out = shared_names(names)
    if large:
        _AFTER.put(move, out, len(out))
    return out


def names_of(req: Request) -> tuple[frozenset[str], ...]:
    """A request's name lists as frozensets: ``(resource_names,)`` for state of the world,
    ``(subscribed, unsubscribed)`` for delta. Large ones are read once per message object
    (the same object for every stream with :class:`RequestCache`) into shared sets."""
    if isinstance(req, discovery_pb2.DeltaDiscoveryRequest):
        lists = (req.resource_names_subscribe, req.resource_names_unsubscribe)
    else:
        lists = (req.resource_names,)
    count = sum(len(names) for names in lists)
    if count < _MANY:
        return tuple(frozenset(names) for names in lists)
    got = _NAMES_OF.get((req,))
    if got is None:
        got = _NAMES_OF.put((req,), tuple(shared_names(n) for n in lists), count)
    return got


class RequestCache(Generic[R]):
    """Equal large requests of one message type parsed once, as one read-only message.
    Bounded: requests of at least ``min_size`` bytes, at most ``max_bytes`` of them held
    (then it starts over). Used as the gRPC method's request deserializer."""

    def __init__(self, message: type[R], min_size: int = 4096, max_bytes: int = 16 << 20
                 ) -> None:
        self._message = message
        self._min_size = min_size
        self._parsed: Bounded[bytes, R] = Bounded(max_weight=max_bytes)

    @property
    def bytes(self) -> int:
        return self._parsed.weight

    def parse(self, raw: bytes) -> R:
        if len(raw) < self._min_size:
            return self._message.FromString(raw)
        got = self._parsed.get(raw)
        if got is None:  # (FromString may raise: nothing kept)
            got = self._parsed.put(raw, self._message.FromString(raw), len(raw))
        return got
