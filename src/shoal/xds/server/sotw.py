"""State-of-the-world ADS: full resource sets per type, one ``version_info`` per type."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from shoal.xds.server.requests import names_of, shared_names
from shoal.xds.server.stream import StreamContext, StreamCore, TypeState
from shoal.xds.types import CLUSTER, ENDPOINT, WILDCARD_TYPES


class SotwStream(StreamCore):
    """SotW semantics on top of :class:`StreamCore`.

    * A request whose ``response_nonce`` is not the latest sent for its type is stale and
      ignored entirely. An empty nonce (first request of a type) is never stale.
    * Empty ``resource_names`` means "all" only for LDS/CDS.
    * A type is answered when its version or its subscribed names change.
    * After a CDS response, the next (non-stale) EDS request is answered even if nothing
      changed: Envoy re-requests EDS for (re)warming clusters and would otherwise wait out
      its initial-fetch timeout.
    * On the first request of a type, a ``version_info`` equal to the version the server
      wants counts as already delivered (no re-push after a control-plane restart).
    * Types other than LDS/CDS (and SRDS, which Envoy treats as the whole set too) get
      only what changed: the subscribed resources that differ from what this stream last
      sent, and names newly subscribed (the xDS protocol allows this for every type but
      Listener and Cluster; Envoy keeps the resources a response leaves out). The first
      response of a type, the one after a NACK, and EDS re-requested after CDS (Envoy
      re-warms clusters) are complete. Nothing changed for the client: nothing is sent,
      and the new version counts as applied.
    """

    flavour = "sotw"

    def __init__(self, ctx: StreamContext) -> None:
        super().__init__(ctx)
        self.eds_after_cds = False
        # non-wildcard type -> (the desired mapping last sent, the names it was sent for)
        self._sent: dict[str, tuple[Mapping[str, Message], frozenset[str]]] = {}

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        self.seen_request(req.type_url)
        st = self.type_state(req.type_url)
        if req.response_nonce and req.response_nonce != st.nonce:
            return  # stale: answers an older response
        if req.response_nonce:
            error = req.error_detail.message if req.HasField("error_detail") else None
            self.answer(st, req.response_nonce, error)
        reconnect = bool(req.version_info) and not req.response_nonce
        version = req.version_info
        names, wildcard = self._subscription(req)
        if not st.requested:
            st.requested = True
            st.dirty = True
            if reconnect:
                # Reconnect: the client says what it has; no push if that is current.
                st.sent_version = version  # counted as applied by pump()
                st.dirty = False
        elif wildcard != st.wildcard or (names is not st.names and names != st.names):
            st.dirty = True
        st.names, st.wildcard = names, wildcard
        if req.type_url == ENDPOINT and self.eds_after_cds:
            st.dirty = True
        self.pump()

    @staticmethod
    def _subscription(req: discovery_pb2.DiscoveryRequest) -> tuple[frozenset[str], bool]:
        """(names, wildcard) of a request. Envoy repeats its whole subscription in every
        request (thousands of EDS names at a thousand services), almost always unchanged
        and the same for every proxy of a scope: the server parses such equal requests
        once and :func:`names_of` reads their names once, into one shared set."""
        (names,) = names_of(req)
        wildcard = req.type_url in WILDCARD_TYPES and (not names or "*" in names)
        if "*" in names:
            names = shared_names(names - {"*"})
        return names, wildcard

    def pending(self, st: TypeState) -> bool:
        if st.dirty:
            return True
        if st.sent_version == self.desired(st.type_url)[1]:
            return False
        return self._send_names(st) != frozenset()

    def _send_names(self, st: TypeState) -> frozenset[str] | None:
        """The names the next response carries; None for a wildcard subscription."""
        if st.wildcard:
            return None
        names = frozenset(st.names)  # (the shared frozenset itself when it is one)
        prev = self._sent.get(st.type_url)
        if (prev is None or st.type_url in WILDCARD_TYPES or st.nacked
                or (st.type_url == ENDPOINT and self.eds_after_cds)):
            return names  # complete
        return self.ctx.cache.changes.diff(prev[0], prev[1], self.desired(st.type_url)[0],
                                           names).updated

    def build(self, st: TypeState) -> bytes:
        """The response, serialized: the header fields, then each resource's cached wire
        form (packing.Packed.resource_field), so a resource shared by a thousand proxies
        is serialized once, not once per proxy and push. The nonce follows the content
        (packing.content_nonce) and the whole response is shared by every stream sent
        the same content (packing.ResponseCache). A client's answer carrying that nonce
        is about content it has been sent, whichever of the equal responses it answers."""
        send = self._send_names(st)
        desired, version = self.desired(st.type_url)
        if send is None:
            items = self.selected(st)
        else:
            items = {n: desired[n] for n in send if n in desired}
            self._sent[st.type_url] = (desired, frozenset(st.names))
        st.sent_version = version
        st.dirty = False
        if st.type_url == CLUSTER:
            self.client_clusters = items
            self.eds_after_cds = True
        elif st.type_url == ENDPOINT:
            self.eds_after_cds = False

        def response(nonce: str) -> bytes:
            header = discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=st.type_url, nonce=nonce).SerializeToString()
            return header + b"".join(
                self.packed(items[n]).resource_field for n in sorted(items))

        return self.shared_response(st, send, frozenset(), response)
