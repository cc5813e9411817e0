"""Incremental (delta) ADS: per-resource versions, subscribe/unsubscribe, removals."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from shoal.xds.cache.packing import Diff
from shoal.xds.server.requests import names_of, shared_names, subscribed_after
from shoal.xds.server.stream import StreamCore, TypeState, eds_name
from shoal.xds.types import CLUSTER, ENDPOINT, WILDCARD_TYPES

_NOTHING: Mapping[str, Message] = {}  # what a client that has nothing is known to have


class DeltaStream(StreamCore):
    """Delta semantics on top of :class:`StreamCore`.

    * Subscription changes are applied from every request, stale nonce or not (they are
      increments and cannot be dropped); the ACK/NACK part only counts for the latest nonce.
    * LDS/CDS start as wildcard when the first request subscribes to nothing (or to "*").
    * ``initial_resource_versions`` (reconnect) tell what the client already has: only the
      differences are sent.
    * The first request of a type gets a response, empty if there is nothing to send
      (Envoy's initialization waits for one).
    * A type needs a response when a subscribed resource's version differs from what the
      client has, or when the client has a resource that no longer exists (removal).
    * Subscribing again to a name re-sends it; clusters (re)sent in CDS get their EDS
      resource re-sent too (Envoy waits for EDS when re-warming a cluster).

    What the client has is known by reference, not copied: after a response it holds
    exactly the subscribed resources of the snapshot mapping that response came from
    (``TypeState.known``), so the next response is the difference between two shared
    mappings, computed once for every stream that makes the same move
    (``packing.ChangeCache.diff``) and sent as bytes shared by all of them
    (``packing.ResponseCache``). Only a reconnect's ``initial_resource_versions`` are held
    per stream, until the first response of that type.
    """

    flavour = "delta"

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        self.seen_request(req.type_url)
        st = self.type_state(req.type_url)
        if req.response_nonce and req.response_nonce == st.nonce:
            error = req.error_detail.message if req.HasField("error_detail") else None
            self.answer(st, req.response_nonce, error)
        subscribe, unsubscribe = names_of(req)
        if not st.requested:
            st.requested = True
            st.wildcard = req.type_url in WILDCARD_TYPES and not subscribe
            if req.initial_resource_versions:
                st.client_has = dict(req.initial_resource_versions)
                st.known = None
            else:
                st.known = (_NOTHING, frozenset())
        elif subscribe:
            self._forget(st, subscribe)  # explicitly (re)subscribed: send it again
        if not (subscribe or unsubscribe):
            self.pump()
            return
        st.clean_at = None  # the subscription changed
        if "*" in subscribe:
            st.wildcard = True
        if "*" in unsubscribe:
            st.wildcard = False
        self._forget(st, unsubscribe)
        st.names = subscribed_after(frozenset(st.names), subscribe, unsubscribe)
        self.pump()

    def _forget(self, st: TypeState, names: AbstractSet[str]) -> None:
        """The client does not have ``names`` (any more)."""
        st.clean_at = None
        if st.known is None:
            for name in names:
                st.client_has.pop(name, None)
            return
        held, has = st.known
        if has is None:
            has = frozenset(held.keys())
        if not has.isdisjoint(names):
            st.known = (held, shared_names(has - names))

    @staticmethod
    def _holds(st: TypeState) -> bool:
        """Does the client hold any resource of this type?"""
        if st.known is None:
            return bool(st.client_has)
        return st.known[1] is None or bool(st.known[1])

    def _diff(self, st: TypeState) -> Diff:
        desired = self.desired(st.type_url)[0]
        if st.known is not None:
            held, has = st.known
            return self.ctx.cache.changes.diff(
                held, has, desired, None if st.wildcard else frozenset(st.names))
        # a reconnect's initial versions: per stream, until its first response of the type
        items = self.selected(st)
        return Diff(
            frozenset(n for n, m in items.items()
                      if st.client_has.get(n) != self.packed(m).version),
            frozenset(n for n in st.client_has if n not in items),
            None if st.wildcard else frozenset(items))

    def pending(self, st: TypeState) -> bool:
        if not st.answered:
            # The first request of a type is answered even when there is nothing to
            # send: Envoy's initialization waits for it (a gateway with no listeners yet
            # would never become LIVE, and so never register the Workload its listeners
            # come from).
            return True
        # Skip even the cached diff while neither the desired content (its version) nor
        # the client's state changed since there was last nothing to send.
        version = self.desired(st.type_url)[1]
        if st.clean_at == version:
            return False
        if self._diff(st):
            return True
        st.clean_at = version
        return False

    def build(self, st: TypeState) -> bytes:
        """The response, serialized (each resource's wire form cached per message, the
        whole response shared by the streams sent the same content: see sotw.build)."""
        diff = self._diff(st)
        desired, version = self.desired(st.type_url)
        st.sent_version = version
        st.known = (desired, diff.held)  # exactly the subscribed resources of ``desired``
        st.client_has = {}
        st.clean_at = version
        st.answered = True
        if st.type_url == CLUSTER:
            self.client_clusters = self.selected(st)
            eds = self.types[ENDPOINT]
            if self._holds(eds):  # re-sent clusters get their endpoints again
                again = {s for n in diff.updated if (s := eds_name(desired[n])) is not None}
                self._forget(eds, again)

        def response(nonce: str) -> bytes:
            header = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=version, type_url=st.type_url, nonce=nonce,
                removed_resources=sorted(diff.removed)).SerializeToString()
            field = self.ctx.cache.packs.delta_field
            return header + b"".join(field(n, desired[n]) for n in sorted(diff.updated))

        return self.shared_response(st, diff.updated, diff.removed, response)
