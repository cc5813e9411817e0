"""Per-proxy, per-type ACK/NACK bookkeeping, for ``shoal proxy-status`` and the dashboard.

Only the newest stream of a node id writes its status; updates from an older,
overlapping stream are ignored. When the node's current stream ends the proxy is marked
disconnected and kept for ``retention`` seconds (then forgotten), so a sidecar that just
went away is still visible with its last known state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shoal.xds.types import PUSH_ORDER, SHORT_NAMES


class Sync(StrEnum):
    SYNCED = "SYNCED"  # every subscribed type acked at the version the server wants
    STALE = "STALE"  # something not sent or not acked yet
    NACKED = "NACKED"  # the last response of some type was rejected


@dataclass
class Nack:
    version: str
    message: str
    at: float


@dataclass
class TypeStatus:
    type_url: str
    want_version: str = ""  # what the server wants this proxy to have
    sent_version: str = ""
    sent_at: float | None = None
    acked_version: str = ""
    acked_at: float | None = None
    nack: Nack | None = None  # stays until a later version is ACKed

    @property
    def short(self) -> str:
        return SHORT_NAMES.get(self.type_url, self.type_url)

    @property
    def synced(self) -> bool:
        return self.nack is None and self.acked_version == self.want_version


@dataclass
class ProxyStatus:
    node_id: str
    flavour: str  # "sotw" | "delta"
    stream_id: int
    connected_since: float
    connected: bool = True
    disconnected_at: float | None = None
    snapshot_version: str = ""
    types: dict[str, TypeStatus] = field(default_factory=dict)

    @property
    def sync(self) -> Sync:
        if any(t.nack is not None for t in self.types.values()):
            return Sync.NACKED
        if not self.snapshot_version or not all(t.synced for t in self.types.values()):
            return Sync.STALE
        return Sync.SYNCED

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.types.values(), key=lambda t: _order(t.type_url))
        out = asdict(self)
        out["sync"] = str(self.sync)
        out["types"] = [{"type": t.short, **asdict(t)} for t in ordered]
        return out


def _order(type_url: str) -> int:
    return PUSH_ORDER.index(type_url) if type_url in PUSH_ORDER else len(PUSH_ORDER)


class StatusTracker:
    """Written by ADS streams, read by status APIs. Single event-loop use."""

    def __init__(self, *, retention: float = 300.0, clock: Callable[[], float] = time.time):
        self._by_node: dict[str, ProxyStatus] = {}
        self._retention = retention
        self._clock = clock

    # -- written by streams ---------------------------------------------------------------
    def connected(self, node_id: str, stream_id: int, flavour: str) -> None:
        self._by_node[node_id] = ProxyStatus(
            node_id=node_id, flavour=flavour, stream_id=stream_id, connected_since=self._clock()
        )

    def disconnected(self, node_id: str, stream_id: int) -> None:
        st = self._current(node_id, stream_id)
        if st is not None:
            st.connected = False
            st.disconnected_at = self._clock()

    def snapshot(self, node_id: str, stream_id: int, version: str) -> None:
        st = self._current(node_id, stream_id)
        if st is not None:
            st.snapshot_version = version

    def want(self, node_id: str, stream_id: int, type_url: str, version: str) -> None:
        t = self._type(node_id, stream_id, type_url)
        if t is not None:
            t.want_version = version

    def sent(self, node_id: str, stream_id: int, type_url: str, version: str) -> None:
        t = self._type(node_id, stream_id, type_url)
        if t is not None:
            t.sent_version, t.sent_at = version, self._clock()

    def acked(self, node_id: str, stream_id: int, type_url: str, version: str) -> None:
        t = self._type(node_id, stream_id, type_url)
        if t is not None:
            t.acked_version, t.acked_at = version, self._clock()
            t.nack = None  # one response in flight per type: an ACK is always newer

    def nacked(self, node_id: str, stream_id: int, type_url: str, version: str, msg: str) -> None:
        t = self._type(node_id, stream_id, type_url)
        if t is not None:
            t.nack = Nack(version=version, message=msg, at=self._clock())

    # -- read -----------------------------------------------------------------------------
    def get(self, node_id: str) -> ProxyStatus | None:
        self._prune()
        return self._by_node.get(node_id)

    def all(self) -> list[ProxyStatus]:
        self._prune()
        return [self._by_node[n] for n in sorted(self._by_node)]

    def _prune(self) -> None:
        cutoff = self._clock() - self._retention
        gone = [
            n
            for n, s in self._by_node.items()
            if not s.connected and s.disconnected_at is not None and s.disconnected_at < cutoff
        ]
        for n in gone:
            del self._by_node[n]

    def _current(self, node_id: str, stream_id: int) -> ProxyStatus | None:
        st = self._by_node.get(node_id)
        return st if st is not None and st.stream_id == stream_id else None

    def _type(self, node_id: str, stream_id: int, type_url: str) -> TypeStatus | None:
        st = self._current(node_id, stream_id)
        if st is None:
            return None
        t = st.types.get(type_url)
        if t is None:  # (not setdefault: that would build a TypeStatus on every call)
            t = st.types[type_url] = TypeStatus(type_url=type_url)
        return t
