"""Who is at the other end of a gRPC call, and which xDS nodes it may speak for.

The secure xDS port requires a client certificate issued by the mesh CA (the TLS layer
checks the chain against the trust bundle); the certificate's one URI SAN is the caller's
SPIFFE ID. :func:`peer_of` reads it from the call. :class:`NodeGuard` decides whether that
peer may be a node (ADS) or report for one (telemetry); :class:`NodeClaims` keeps who holds
each node id so that no other identity takes over a connected proxy. See
docs/adr/0020-xds-peer-identity.md.

Rules for a peer with a certificate (``spiffe://TD/ns/NS/sa/SA``):

* the trust domain is the mesh's, the node's namespace is ``NS``, and its node id is
  ``<workload>.<NS>`` (the node id is the key of all per-proxy state);
* the workload the node names, if registered, is registered with service account ``SA``.

A plaintext peer (the loopback port) may claim any node unless ``trust_plaintext`` is off
(the control plane requires tokens): then it may not claim, nor report telemetry for, a
workload whose sidecar has a mesh identity; and it may never take a node held over mTLS.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.ca import pki
from shoal.ca.peer_cert import workload_identity
from shoal.ca.spiffe import SpiffeId
from shoal.errors import PermissionDenied, Unauthenticated
from shoal.xds.node import NodeOwner, node_id
from shoal.xds.types import Proxy

OwnerLookup = Callable[[str, str], NodeOwner | None]  # (namespace, workload) -> owner


def _nobody(namespace: str, workload: str) -> NodeOwner | None:
    return None


@dataclass(frozen=True)
class Peer:
    """The caller of one gRPC call: its verified SPIFFE ID, or None over plaintext."""

    identity: SpiffeId | None = None

    def __str__(self) -> str:
        return str(self.identity) if self.identity is not None else "a plaintext peer"


PLAINTEXT = Peer()


@functools.lru_cache(maxsize=256)
def _identity_of(pem: bytes) -> SpiffeId:
    certs = pki.load_certs(pem)
    if not certs:
        raise PermissionDenied("the client certificate could not be read")
    return workload_identity(certs[0])


def peer_of(context: Any) -> Peer:
    """The peer of a grpc.aio call, from its transport: TLS with a verified client
    certificate, or plaintext. Unauthenticated for TLS without a certificate."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return PLAINTEXT
    pem = b"".join(auth.get("x509_pem_cert") or ())
    if not pem:
        raise Unauthenticated("no client certificate: this port needs the workload's "
                              "mesh certificate")
    return Peer(_identity_of(pem))


class NodeGuard:
    """Whether a peer may be a node (ADS) or report telemetry as one.

    ``owners`` tells the registered owner of (namespace, workload); ``trust_domain`` (if
    set) is the only one accepted; ``trust_plaintext`` off: plaintext peers may not speak
    for workloads that have a mesh identity, nor report telemetry at all."""

    def __init__(self, trust_domain: str | None = None, owners: OwnerLookup = _nobody, *,
                 trust_plaintext: bool = True) -> None:
        self.trust_domain = trust_domain
        self.owners = owners
        self.trust_plaintext = trust_plaintext

    def check_node(self, peer: Peer, proxy: Proxy) -> NodeOwner | None:
        """Raise PermissionDenied unless ``peer`` may be ``proxy``; its owner if known."""
        owner = self.owners(proxy.namespace, proxy.workload)
        sid = peer.identity
        if sid is None:
            if not self.trust_plaintext:
                claimed = {(proxy.namespace, proxy.workload), _split(proxy.node_id)}
                for ns, workload in sorted(claimed):
                    o = self.owners(ns, workload) if workload else None
                    if o is not None and o.mesh_identity:
                        raise PermissionDenied(
                            f"node {proxy.node_id!r}: workload {ns}/{workload} has a mesh "
                            f"identity (service account {o.service_account!r}); its proxy "
                            "must use the secure xDS port with its certificate")
            return owner
        self._check_identity(sid, f"node {proxy.node_id!r}", proxy.namespace, proxy.workload,
                             owner)
        want = node_id(proxy.workload, proxy.namespace)
        if proxy.node_id != want:
            raise PermissionDenied(f"node id {proxy.node_id!r} must be {want!r} "
                                   "(<workload>.<namespace> of its node metadata)")
        return owner

    def check_reporter(self, peer: Peer, reporter: str) -> None:
        """Raise unless ``peer`` may report telemetry as node id ``reporter``."""
        sid = peer.identity
        if sid is None:
            if not self.trust_plaintext:
                raise Unauthenticated("telemetry is accepted from mesh identities over mTLS "
                                      "only (the secure xDS port)")
            return
        namespace, workload = _split(reporter)
        if not workload:
            raise PermissionDenied(f"reporter {reporter!r} is not <workload>.<namespace>")
        self._check_identity(sid, f"reporter {reporter!r}", namespace, workload,
                             self.owners(namespace, workload))

    def _check_identity(self, sid: SpiffeId, what: str, namespace: str, workload: str,
                        owner: NodeOwner | None) -> None:
        if self.trust_domain is not None and sid.trust_domain != self.trust_domain:
            raise PermissionDenied(f"{what}: certificate {sid} is not of trust domain "
                                   f"{self.trust_domain!r}")
        if namespace != sid.namespace:
            raise PermissionDenied(f"{what}: namespace {namespace!r} is not the "
                                   f"certificate's ({sid})")
        if owner is not None and owner.service_account != sid.service_account:
            raise PermissionDenied(
                f"{what}: workload {namespace}/{workload} is registered with service account "
                f"{owner.service_account!r}, the certificate is {sid}")


def _split(node: str) -> tuple[str, str]:
    """``<workload>.<namespace>`` -> (namespace, workload); ("", "") if not of that form."""
    workload, _, namespace = node.rpartition(".")
    return (namespace, workload) if workload and namespace else ("", "")


@dataclass
class Claim:
    """One live stream's hold on its node id; ``revoked`` is set when it must end."""

    identity: SpiffeId | None
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""


class NodeClaims:
    """The live streams of every node id and the identity each was opened with.

    A new stream may join streams of the same identity (Envoy reconnecting). Otherwise:
    a plaintext stream never takes a node held over mTLS; an mTLS stream takes a node held
    by plaintext streams only, or by another identity when the node's workload is
    registered with the newcomer's service account (a squatter is cut); anything else is
    refused, so a connected proxy keeps its node."""

    def __init__(self) -> None:
        self._claims: dict[str, dict[int, Claim]] = {}

    def claim(self, node: str, stream_id: int, peer: Peer, owner: NodeOwner | None) -> Claim:
        held = self._claims.get(node, {})
        others = [c for c in held.values() if c.identity != peer.identity]
        if others:
            holder = next((c.identity for c in others if c.identity is not None), None)
            sid = peer.identity
            if sid is None or (holder is not None and (
                    owner is None or owner.service_account != sid.service_account)):
                raise PermissionDenied(f"node {node!r} is connected as {holder or 'plaintext'}"
                                       f"; {peer} may not take it over")
            for c in others:
                c.reason = f"node {node!r} was claimed over mTLS by {sid}"
                c.revoked.set()
        claim = self._claims.setdefault(node, {})[stream_id] = Claim(peer.identity)
        return claim

    def release(self, node: str, stream_id: int) -> None:
        held = self._claims.get(node)
        if held is not None:
            held.pop(stream_id, None)
            if not held:
                del self._claims[node]
