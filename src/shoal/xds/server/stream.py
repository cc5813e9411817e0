"""The flavour-independent core of one ADS stream (go-control-plane style).

One :class:`StreamCore` per gRPC stream holds, per type URL, what the client subscribed
to, what was sent and what was acknowledged. :meth:`StreamCore.pump` decides what to send
next; the wire flavours (:mod:`.sotw`, :mod:`.delta`) only say whether a type needs a
response and how to build it.

Rules implemented here:

* **One response in flight per type.** Nothing new is sent for a type until the previous
  response was ACKed or NACKed; memory per stream is bounded by design.
* **Push order, make-before-break.** Types go out in ``PUSH_ORDER`` (SDS, CDS, EDS, LDS,
  RDS); a type is sent only when every earlier subscribed type is settled (sent and
  acknowledged) — except that EDS may follow CDS at once: Envoy ACKs CDS only after the
  new clusters are warm, and they warm with EDS. Later types wait until the client has
  processed CDS (its ACK, or its next EDS request). Clusters that disappear from the
  snapshot are *retained* in CDS (and their endpoints in EDS) until LDS, SRDS and RDS
  are settled at the new version; then CDS and EDS are pushed again without them.
* **NACKs never loop.** A NACK is recorded; nothing is re-sent because of it.
* **A client that cannot keep up is cut, memory does not grow.** Snapshots coalesce
  (latest wins) and one response per type is in flight, so a slow client only lags.
  Responses wait for the writer in a queue of ``max_queue`` items; overflow, a write that
  cannot complete within ``send_timeout`` (gRPC buffers are full), or a response left
  unanswered for ``ack_timeout`` once written (time waiting for the write budget is the
  server's, not the client's) cuts the stream (the edge maps :class:`SlowClient` to
  RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from shoal.errors import ShoalError
from shoal.xds.cache import Packed, SnapshotCache
from shoal.xds.server.budget import WriteBudget
from shoal.xds.server.status import StatusTracker
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SCOPED_ROUTE,
    ProxySnapshot,
    names_within,
)


def eds_name(msg: Message) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster asks for."""
    if isinstance(msg, cluster_pb2.Cluster) and msg.type == cluster_pb2.Cluster.EDS:
        return msg.eds_cluster_config.service_name or msg.name
    return None


class SlowClient(ShoalError):
    """An xDS client did not read its responses fast enough; its stream is cut."""


@dataclass
class TypeState:
    """Per-type bookkeeping of one stream."""

    type_url: str
    requested: bool = False  # the client asked for this type at least once
    wildcard: bool = False
    names: set[str] | frozenset[str] = field(default_factory=set)  # SotW: shared frozenset
    nonce: str = ""  # nonce of the latest response sent
    in_flight: bool = False  # latest response not yet ACKed/NACKed
    in_flight_version: str = ""
    # loop time the client took the latest response (inf while it waits to be written:
    # the ACK clock does not count the server's own pacing, the write budget)
    sent_at: float = 0.0
    sent_version: str = ""
    acked_version: str = ""
    nacked: bool = False  # the latest answered response was a NACK
    dirty: bool = False  # respond even if the version did not change (SotW)
    # delta: the client holds the resources named ``known[1]`` (None: all) of the mapping
    # ``known[0]``, as that mapping has them; None: ``client_has`` says what it holds
    known: tuple[Mapping[str, Message], frozenset[str] | None] | None = None
    client_has: dict[str, str] = field(default_factory=dict)  # delta: name -> version
    answered: bool = False  # delta: a response of this type was sent on this stream
    # delta: the desired version for which client_has was last known to match the
    # subscription exactly (nothing to send); None after anything that may change that
    clean_at: str | None = None


@dataclass(frozen=True)
class StreamContext:
    """What a stream needs from its server (constructor injection)."""

    node_id: str
    stream_id: int
    cache: SnapshotCache
    status: StatusTracker
    max_queue: int = 16
    send_timeout: float = 30.0
    ack_timeout: float = 60.0
    # the server's, shared by its streams (a stream of its own gets one of its own)
    budget: WriteBudget = field(default_factory=WriteBudget)


class StreamCore:
    flavour: ClassVar[str] = ""

    def __init__(self, ctx: StreamContext) -> None:
        self.ctx = ctx
        self.target: ProxySnapshot | None = None
        self.types: dict[str, TypeState] = {t: TypeState(t) for t in PUSH_ORDER}
        # make-before-break: type -> removed resources kept until LDS/RDS stop using them
        self.retained: dict[str, dict[str, Message]] = {}
        # clusters the client was last sent (SotW: the snapshot's mapping; delta: its own)
        self.client_clusters: Mapping[str, Message] = {}
        # (type URL, response) waiting for the writer
        self.outbox: asyncio.Queue[tuple[str, Message | bytes]] = asyncio.Queue(ctx.max_queue)
        self._nonce = 0
        self._writing_since: float | None = None  # loop time the current write began
        self.cds_processed = True
        self._desired: dict[str, tuple[Mapping[str, Message], str]] = {}

    # -- flavour hooks ----------------------------------------------------------------------
    def on_request(self, req: Any) -> None:
        """Apply one request from the client (ACK/NACK, subscription), then pump."""
        raise NotImplementedError

    def pending(self, st: TypeState) -> bool:
        """Does this (requested, not in flight) type need a response now?"""
        raise NotImplementedError

    def build(self, st: TypeState) -> Message | bytes:
        """Build the response for ``st`` (a message, or its serialized form) and record what
        the client now has."""
        raise NotImplementedError

    # -- inputs -----------------------------------------------------------------------------
    def set_target(self, snapshot: ProxySnapshot) -> None:
        """A new snapshot from the cache (latest wins)."""
        new = snapshot.get(CLUSTER).items
        same = new is self.client_clusters  # unchanged CDS: the very mapping it was sent
        gone = {} if same or names_within(self.client_clusters, new) else {
            n: m for n, m in self.client_clusters.items() if n not in new}
        keep_eds = {}
        if gone:  # their endpoints stay until the client has dropped them (retained)
            current = self.target.get(ENDPOINT).items if self.target is not None else {}
            retained = self.retained.get(ENDPOINT, {})
            new_eds = snapshot.get(ENDPOINT).items
            for msg in gone.values():
                service = eds_name(msg)
                if not service or service in new_eds:
                    continue
                if service in current:
                    keep_eds[service] = current[service]
                elif service in retained:
                    keep_eds[service] = retained[service]
        self.retained = {t: r for t, r in ((CLUSTER, gone), (ENDPOINT, keep_eds)) if r}
        self.target = snapshot
        self._desired.clear()
        self.ctx.status.snapshot(self.ctx.node_id, self.ctx.stream_id, snapshot.version)
        self.pump()

    def answer(self, st: TypeState, nonce: str, error: str | None) -> None:
        """The client answered the response with ``nonce`` (caller checked it is latest)."""
        if not st.in_flight or nonce != st.nonce:
            return
        st.in_flight = False
        if st.type_url == CLUSTER:
            self.cds_processed = True
        c = self.ctx
        if error is not None:
            st.nacked = True
            c.status.nacked(c.node_id, c.stream_id, st.type_url, st.in_flight_version, error)
        else:
            st.nacked = False
            st.acked_version = st.in_flight_version
            c.status.acked(c.node_id, c.stream_id, st.type_url, st.acked_version)

    # -- what the client should have ----------------------------------------------------------
    def desired(self, type_url: str) -> tuple[Mapping[str, Message], str]:
        """All resources of a type this client should have (before name filtering), version."""
        got = self._desired.get(type_url)
        if got is None:
            assert self.target is not None
            res = self.target.get(type_url)
            items, version = res.items, res.version
            kept = self.retained.get(type_url)
            if kept:
                items = {**kept, **items}
                h = hashlib.sha256()
                for n in sorted(kept):
                    h.update(n.encode() + b"\0" + self.packed(kept[n]).version.encode())
                version = f"{version}+{h.hexdigest()[:8]}"
            got = self._desired[type_url] = (items, version)
        return got

    def selected(self, st: TypeState) -> Mapping[str, Message]:
        """The desired resources this client subscribed to (read-only: for a wildcard
        subscription, the snapshot's own mapping, not a per-stream copy)."""
        items, _ = self.desired(st.type_url)
        if st.wildcard:
            return items
        return {n: items[n] for n in st.names if n in items}

    def packed(self, msg: Message) -> Packed:
        return self.ctx.cache.packed(msg)

    def shared_response(self, st: TypeState, names: frozenset[str] | None,
                        removed: frozenset[str], response: Callable[[str], bytes]) -> bytes:
        """The serialized response of ``st``'s type at ``st.sent_version`` carrying
        ``names`` (None: all of the type) and removing ``removed``, built by
        ``response(nonce)``: once per content for every stream (``ResponseCache``, the
        nonce derived from the content); without a content version, a nonce and bytes of
        its own. Sets ``st.nonce``."""
        version = st.sent_version
        if not version:
            st.nonce = self.next_nonce()
            return response(st.nonce)
        key = (self.flavour, st.type_url, version, names, removed)
        st.nonce, out = self.ctx.cache.responses.get(key, response)
        return out

    def next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    # -- deciding what to send -----------------------------------------------------------------
    def settled(self, type_url: str) -> bool:
        st = self.types[type_url]
        return not st.requested or (not st.in_flight and not self.pending(st))

    def pump(self) -> None:
        """Queue every response that may go out now, in push order."""
        if self.target is None:
            return
        if self.retained and all(self.settled(t) for t in (LISTENER, SCOPED_ROUTE, ROUTE)):
            self.retained = {}
            self._desired.clear()
        c = self.ctx
        for st in self.types.values():
            if st.requested:
                version = self.desired(st.type_url)[1]
                c.status.want(c.node_id, c.stream_id, st.type_url, version)
                if not st.in_flight and not st.nacked and not self.pending(st) \
                        and st.acked_version != version:
                    # The client already has this version (it said so on reconnect):
                    # nothing to send, and it counts as applied.
                    st.acked_version = version
                    c.status.acked(c.node_id, c.stream_id, st.type_url, version)
        wait_cds = False  # CDS sent, not processed by the client yet: only EDS may go
        for type_url in PUSH_ORDER:
            st = self.types[type_url]
            if not st.requested:
                continue
            if wait_cds and type_url != ENDPOINT:
                return
            if st.in_flight:
                if type_url == CLUSTER and not self.cds_processed:
                    wait_cds = True
                    continue
                if type_url != CLUSTER:
                    return
            elif self.pending(st):
                self._send(st)
                if type_url != CLUSTER:
                    return
                wait_cds = True
            else:
                want = self.desired(type_url)[1]
                if not st.nacked and st.acked_version != want:
                    # Nothing to send: the client already has what it should (delta, or
                    # the version it reported on reconnect).
                    st.acked_version = want
                    c.status.acked(c.node_id, c.stream_id, type_url, want)
        # Unknown (non-standard) types are served after the standard ones.
        for st in self.types.values():
            extra = st.type_url not in PUSH_ORDER and st.requested and not st.in_flight
            if extra and self.pending(st):
                self._send(st)

    def seen_request(self, type_url: str) -> None:
        """Called for every request, stale or not, before it is applied."""
        if type_url == ENDPOINT:
            # Envoy asks for EDS after it applied a CDS update, but ACKs that CDS update
            # only once the new clusters are warm (which needs EDS): so an EDS request
            # is the sign that CDS was processed.
            self.cds_processed = True

    def _send(self, st: TypeState) -> None:
        response = self.build(st)
        if st.type_url == CLUSTER:
            self.cds_processed = False
        st.in_flight = True
        st.in_flight_version = st.sent_version
        st.sent_at = math.inf  # until written (write_loop)
        c = self.ctx
        c.status.sent(c.node_id, c.stream_id, st.type_url, st.sent_version)
        try:
            self.outbox.put_nowait((st.type_url, response))
        except asyncio.QueueFull:
            raise SlowClient(f"{c.node_id}: more than {c.max_queue} responses queued") from None

    def type_state(self, type_url: str) -> TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeState(type_url)
        return st

    # -- the writer ----------------------------------------------------------------------------
    async def write_loop(self, write: Callable[[Message | bytes], Awaitable[None]]) -> None:
        """Send the queued responses in order. A write that the client does not take
        within ``send_timeout`` is cut by the server's watchdog (:meth:`overdue`; no timer per
        write: with thousands of streams per push, their allocation showed in profiles)."""
        loop = asyncio.get_running_loop()
        while True:
            type_url, response = await self.outbox.get()
            size = len(response) if isinstance(response, bytes) else response.ByteSize()
            lease = await self.ctx.budget.acquire(size)  # (the connect storm's memory)
            try:
                self._writing_since = loop.time()
                await write(response)
                self._writing_since = None
                st = self.types.get(type_url)
                if st is not None and st.in_flight:
                    st.sent_at = loop.time()  # the client has it: now it owes an answer
            finally:
                self.ctx.budget.release(lease)
            # not kept while waiting for the next one: a full CDS response of a large
            # mesh is hundreds of kB, held per stream for as long as the mesh is quiet
            del response

    def overdue(self, now: float) -> SlowClient | None:
        """Why the stream must be cut at loop time ``now``, if it must: a response not
        taken for ``send_timeout`` or unanswered for ``ack_timeout`` (the server's
        :class:`~shoal.xds.server.watchdog.Watchdog` asks every stream)."""
        since = self._writing_since
        if since is not None and now - since > self.ctx.send_timeout:
            return SlowClient(f"{self.ctx.node_id}: a response was not taken within "
                              f"{self.ctx.send_timeout:g}s")
        limit = self.ctx.ack_timeout
        for st in self.types.values():
            if st.in_flight and now - st.sent_at > limit:
                return SlowClient(f"{self.ctx.node_id}: {st.type_url} response not "
                                  f"acknowledged within {limit:g}s")
        return None
