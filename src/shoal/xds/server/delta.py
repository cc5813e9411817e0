"""Incremental (delta) ADS: per-resource versions, subscribe/unsubscribe, removals."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from shoal.xds.server.stream import StreamCore, TypeState, eds_name
from shoal.xds.types import CLUSTER, ENDPOINT, WILDCARD_TYPES


class DeltaStream(StreamCore):
    """Delta semantics on top of :class:`StreamCore`.

    * Subscription changes are applied from every request, stale nonce or not (they are
      increments and cannot be dropped); the ACK/NACK part only counts for the latest nonce.
    * LDS/CDS start as wildcard when the first request subscribes to nothing (or to "*").
    * ``initial_resource_versions`` (reconnect) tell what the client already has: only the
      differences are sent.
    * A type needs a response when a subscribed resource's version differs from what the
      client has, or when the client has a resource that no longer exists (removal).
    * Subscribing again to a name re-sends it; clusters (re)sent in CDS get their EDS
      resource re-sent too (Envoy waits for EDS when re-warming a cluster).
    """

    flavour = "delta"

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        self.seen_request(req.type_url)
        st = self.type_state(req.type_url)
        st.clean_at = None  # subscriptions or what the client has may change below
        if req.response_nonce and req.response_nonce == st.nonce:
            error = req.error_detail.message if req.HasField("error_detail") else None
            self.answer(st, req.response_nonce, error)
        subscribe = list(req.resource_names_subscribe)
        if not st.requested:
            st.requested = True
            st.wildcard = req.type_url in WILDCARD_TYPES and not subscribe
            st.client_has.update(req.initial_resource_versions)
        elif subscribe:
            for name in subscribe:
                st.client_has.pop(name, None)  # explicitly (re)subscribed: send it again
        for name in subscribe:
            if name == "*":
                st.wildcard = True
            else:
                st.names.add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                st.wildcard = False
            else:
                st.names.discard(name)
                st.client_has.pop(name, None)
        self.pump()

    def _diff(self, st: TypeState) -> tuple[dict[str, Message], list[str]]:
        items = self.selected(st)
        updated = {n: m for n, m in items.items() if st.client_has.get(n) != self.packed(m).version}
        removed = [n for n in st.client_has if n not in items]
        return updated, removed

    def pending(self, st: TypeState) -> bool:
        # The diff walks every resource of the type: skip it while neither the desired
        # content (its version) nor the client's state changed since it was last empty.
        version = self.desired(st.type_url)[1]
        if st.clean_at == version:
            return False
        updated, removed = self._diff(st)
        if not (updated or removed):
            st.clean_at = version
        return bool(updated or removed)

    def build(self, st: TypeState) -> discovery_pb2.DeltaDiscoveryResponse:
        updated, removed = self._diff(st)
        version = self.desired(st.type_url)[1]
        st.nonce = self.next_nonce()
        st.sent_version = version
        resources = []
        for name in sorted(updated):
            p = self.packed(updated[name])
            st.client_has[name] = p.version
            resources.append(discovery_pb2.Resource(name=name, version=p.version, resource=p.any))
        for name in removed:
            del st.client_has[name]
        st.clean_at = version  # the client now has exactly what it subscribed to
        if st.type_url == CLUSTER:
            gone = set(removed)
            have = {n: m for n, m in self.client_clusters.items() if n not in gone}
            have.update(updated)
            self.client_clusters = have
            eds = self.types[ENDPOINT]
            eds.clean_at = None  # re-sent clusters get their endpoints again (below)
            for msg in updated.values():
                service = eds_name(msg)
                if service is not None:
                    eds.client_has.pop(service, None)
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            type_url=st.type_url,
            nonce=st.nonce,
            resources=resources,
            removed_resources=removed,
        )
