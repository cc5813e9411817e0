"""Who may ask the rate-limit service for a decision (docs/adr/0025).

A decision moves counters, and quota counters persist: an anonymous caller could use up
anybody's daily quota. So a caller is a mesh identity, read from its client certificate
(:func:`shoal.xds.server.peer.peer_of`: the one SPIFFE URI SAN of a certificate the TLS
layer verified against the mesh roots), never from what the request says. Plaintext
callers are accepted only where the mesh itself trusts plaintext (``--no-require-tokens``
meshes, whose sidecars have no certificate), and by a standalone service started with
``--insecure-plaintext`` (development, loopback only). A standalone service with its mesh
identity (:mod:`shoal.ratelimit.identity`) uses ``CallerPolicy(<its trust domain>)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import PermissionDenied, Unauthenticated
from shoal.xds.server.peer import NodeGuard, Peer, peer_of


@dataclass(frozen=True)
class CallerPolicy:
    """``trust_domain``: the only one accepted (None: any the roots verified);
    ``allow_plaintext``: whether a caller without TLS is served."""

    trust_domain: str | None = None
    allow_plaintext: bool = False

    @classmethod
    def of_mesh(cls, guard: NodeGuard) -> CallerPolicy:
        """The same trust as the xDS and telemetry services on the same gRPC server."""
        return cls(guard.trust_domain, allow_plaintext=guard.trust_plaintext)

    def check(self, context: Any) -> Peer:
        """The caller of a grpc.aio call, or Unauthenticated / PermissionDenied."""
        peer = peer_of(context)  # TLS without a certificate: Unauthenticated
        sid = peer.identity
        if sid is None:
            if not self.allow_plaintext:
                raise Unauthenticated(
                    "the rate-limit service answers mesh identities over mTLS only (the "
                    "secure xDS port, with the workload certificate)")
            return peer
        if self.trust_domain is not None and sid.trust_domain != self.trust_domain:
            raise PermissionDenied(f"certificate {sid} is not of trust domain "
                                   f"{self.trust_domain!r}")
        return peer


MESH_ONLY = CallerPolicy()  # mTLS callers of any trust domain the roots verify
PLAINTEXT_TOO = CallerPolicy(allow_plaintext=True)  # `ratelimit serve --insecure-plaintext`
