"""Pack each distinct resource message into an ``Any`` once, however many proxies get it.

Generators hand THE SAME protobuf message object to many proxies (one Cluster for a
thousand sidecars). Serializing is the hot path of a push, so the packed form is cached
per message *object* (keyed by ``id(msg)``; the entry holds a strong reference, so the id
cannot be reused while the entry lives). Messages put in a snapshot must not be mutated
afterwards. Entries no longer referenced by a live snapshot are dropped by :meth:`sweep`;
correctness never depends on sweeping — a dropped entry is simply packed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from shoal.xds.cache.bounded import Bounded, ByIdentity
from shoal.xds.types import split

_PREFIX = "type.googleapis.com/"


@dataclass(frozen=True, slots=True)
class Packed:
    """One resource ready for the wire."""

    msg: Message  # the original (kept alive so its id stays unique)
    any: any_pb2.Any
    version: str  # content hash of the serialized resource (delta per-resource version)
    # this Any as field 2 (``resources``) of a DiscoveryResponse, tag and length included:
    # a SotW response is its header fields followed by these, joined (sotw.py)
    resource_field: bytes

    @property
    def size(self) -> int:
        """Bytes this entry holds in serialized form (the Any's value and the field)."""
        return len(self.any.value) + len(self.resource_field)


def _length_delimited(field: int, payload: bytes) -> bytes:
    """Protobuf wire form of one length-delimited field."""
    out = bytearray([field << 3 | 2])
    n = len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def pack(msg: Message) -> Packed:
    """Pack without caching (deterministic serialization, so equal content = equal bytes)."""
    value = msg.SerializeToString(deterministic=True)
    packed_any = any_pb2.Any(type_url=_PREFIX + msg.DESCRIPTOR.full_name, value=value)
    return Packed(msg=msg, any=packed_any, version=hashlib.sha256(value).hexdigest()[:16],
                  resource_field=_length_delimited(2, packed_any.SerializeToString()))


class PackCache:
    """``id(msg) -> Packed`` with identity check; see the module docstring."""

    def __init__(self) -> None:
        self._entries: dict[int, Packed] = {}
        # delta xDS: id(msg) -> (msg, resource name, its Resource as a response field)
        self._delta: dict[int, tuple[Message, str, bytes]] = {}
        self.hits = 0
        self.misses = 0
        self.bytes = 0  # serialized size of the entries held

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, msg: Message) -> Packed:
        entry = self._entries.get(id(msg))
        if entry is not None and entry.msg is msg:
            self.hits += 1
            return entry
        self.misses += 1
        entry = pack(msg)
        self._entries[id(msg)] = entry
        self.bytes += entry.size
        return entry

    def delta_field(self, name: str, msg: Message) -> bytes:
        """``msg`` as a delta Resource (name, version, the packed Any) in wire form as
        field 2 (``resources``) of a DeltaDiscoveryResponse; cached like :meth:`get`."""
        entry = self._delta.get(id(msg))
        if entry is not None and entry[0] is msg and entry[1] == name:
            return entry[2]
        p = self.get(msg)
        field = _length_delimited(2, discovery_pb2.Resource(
            name=name, version=p.version, resource=p.any).SerializeToString())
        self._delta[id(msg)] = (msg, name, field)
        self.bytes += len(field)
        return field

    def sweep(self, live: Iterable[Message]) -> int:
        """Keep only entries for messages in ``live``; return how many were dropped."""
        keep: dict[int, Packed] = {}
        for msg in live:
            entry = self._entries.get(id(msg))
            if entry is not None and entry.msg is msg:
                keep[id(msg)] = entry
        dropped = len(self._entries) - len(keep)
        self._entries = keep
        self._delta = {i: e for i, e in self._delta.items() if i in keep and keep[i].msg is e[0]}
        self.bytes = (sum(e.size for e in keep.values())
                      + sum(len(e[2]) for e in self._delta.values()))
        return dropped


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed for one client: resources to (re)send, names to remove."""

    updated: frozenset[str]
    removed: frozenset[str]
    # what the client holds afterwards: the subscribed names the new mapping has (None:
    # all of it, a wildcard); one object for every stream that makes the same move
    held: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


# (flavour, type URL, content version, the names of the resources in the response or None
# for all of the type, the names it removes (delta))
ResponseKey = tuple[str, str, str, frozenset[str] | None, frozenset[str]]
_RESPONSE_BYTES = 64 << 20


def content_nonce(key: ResponseKey) -> str:
    """The nonce of the response with this content: equal content, equal nonce (so the
    whole response can be shared), different content, different nonce."""
    flavour, type_url, version, names, removed = key
    h = hashlib.sha256(f"{flavour}\0{type_url}\0{version}\0".encode())
    if names is not None:
        h.update("\0".join(sorted(names)).encode())
    if removed:
        h.update(b"\1" + "\0".join(sorted(removed)).encode())
    return h.hexdigest()[:16]


class ResponseCache:
    """Serialized responses (SotW and delta) by what they contain: a resource set's version is its
    content hash (``shoal.xds.types.Resources``) and the nonce is derived from the same
    key, so equal keys are equal bytes, and a thousand proxies sent the same route
    configurations share one response object instead of each joining and copying a
    fresh one (large allocations: 19 % of a push's CPU at 2,000 proxies). Bounded by
    bytes: emptied when it would exceed ``max_bytes`` (old versions are garbage after a
    push)."""

    def __init__(self, max_bytes: int = _RESPONSE_BYTES) -> None:
        self._entries: Bounded[ResponseKey, tuple[str, bytes]] = Bounded(max_weight=max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._entries.weight

    def get(self, key: ResponseKey, build: Callable[[str], bytes]) -> tuple[str, bytes]:
        """(nonce, response): cached, or ``build(nonce)`` and kept if it fits."""
        entry = self._entries.get(key)
        if entry is None:
            nonce = content_nonce(key)
            response = build(nonce)
            entry = self._entries.put(key, (nonce, response), len(response))
        return entry


class ChangeCache:
    """Which resources differ between two resource mappings (SotW partial responses,
    sotw.py; delta responses, delta.py): computed once per (old mapping, new mapping,
    names) and shared by every stream that moves between the same two snapshots -- the
    mappings are the shared objects of the generators, so a thousand proxies of one scope
    ask the same question. Keyed by identity; an entry holds both mappings, so their ids
    cannot be reused while it lives. Bounded: emptied when it holds ``max_entries``;
    diffs of mappings with fewer than ``min_cached`` resources between them are not kept.

    A proxy's own items (its inbound clusters) make its Diff differ from the shared one,
    but mostly in the same way as the other proxies' (every sidecar's inbound cluster of
    port 8080 has the same name and content): such Diffs are one object too, found by
    the shared Diff and the own names, so the response cache keyed by the names to send
    matches them by identity instead of comparing thousands of names per stream. Bounded
    by the names they hold as well (``max_own_names``)."""

    def __init__(self, packed: Callable[[Message], Packed], max_entries: int = 1024,
                 max_own_names: int = 500_000, min_cached: int = 32) -> None:
        self._packed = packed
        self._min_cached = min_cached  # fewer resources in both mappings: not kept
        # (old, new; has, names) -> Diff
        self._diffs: ByIdentity[Diff] = ByIdentity(max_entries=max_entries)
        # (shared Diff; own names, own updated, own removed, own held) -> Diff
        self._own: ByIdentity[Diff] = ByIdentity(max_entries=max_entries,
                                                 max_weight=max_own_names)

    def diff(self, old: Mapping[str, Message], has: frozenset[str] | None,
             new: Mapping[str, Message], names: frozenset[str] | None) -> Diff:
        """A client holds ``old``'s resources named ``has`` (None: all of ``old``) and
        subscribes to ``names`` (None: everything, a wildcard): the names of ``new`` it
        must be sent (subscribed, and missing or different in content) and the names it
        must drop (held, and no longer subscribed or gone from ``new``). SotW partial
        responses use the first part, delta responses both.

        Overlays (a shared mapping with one proxy's own items on top) are compared by
        parts: the shared parts once for every proxy (cached), then the few names that
        are anyone's own; a proxy whose own items take no part in the change gets the
        shared Diff object itself, and nothing per proxy is cached."""
        old_base, old_own = split(old)
        new_base, new_own = split(new)
        shared = self._diff(old_base, has, new_base, names)
        if not (old_own or new_own):
            return shared
        own = old_own.keys() | new_own.keys()
        held = old.keys() if has is None else has
        updated, removed, after = set(), set(), set()
        packed = self._packed
        for n in own:
            wanted = n in new and (names is None or n in names)
            if wanted:
                after.add(n)
                before = old.get(n) if n in held else None
                m = new[n]
                if before is not m and (
                        before is None or packed(before).version != packed(m).version):
                    updated.add(n)
            elif n in held:
                removed.add(n)
        shared_after = shared.held
        if (shared.updated & own == updated and shared.removed & own == removed
                and (shared_after is None or shared_after & own == after)):
            return shared
        key = (frozenset(own), frozenset(updated), frozenset(removed),
               None if shared_after is None else frozenset(after))
        got = self._own.get((shared,), key)
        if got is not None:
            return got
        if shared_after is not None:
            shared_after = (shared_after - own) | after
            if shared_after == names:
                shared_after = names
        out = Diff(frozenset((shared.updated - own) | updated),
                   frozenset((shared.removed - own) | removed), shared_after)
        weight = len(out.updated) + len(out.removed) + len(out.held or ())
        self._own.put((shared,), out, weight, key)
        return out

    def _diff(self, old: Mapping[str, Message], has: frozenset[str] | None,
              new: Mapping[str, Message], names: frozenset[str] | None) -> Diff:
        # Small mappings (a proxy's own listeners: one per configuration) are compared
        # again rather than kept: thousands of them emptied the cache during the connect
        # storm, the large shared diffs were computed again as new but equal name sets,
        # and every stream's response lookup then compared thousands of names.
        small = len(old) + len(new) < self._min_cached
        entry = None if small else self._diffs.get((old, new), (has, names))
        if entry is not None:
            return entry
        want = new.keys() if names is None else names & new.keys()
        held = old.keys() if has is None else has
        packed = self._packed
        updated = []
        for n in want:
            m = new[n]
            before = old.get(n) if n in held else None
            if before is m:
                continue
            if before is None or packed(before).version != packed(m).version:
                updated.append(n)
        after = None if names is None else names if len(want) == len(names) else frozenset(want)
        out = Diff(frozenset(updated), frozenset(held - want), after)
        if not small:
            self._diffs.put((old, new), out, extra=(has, names))
        return out
