"""TLS of the agent's metrics endpoint: the workload certificate as server certificate,
a client certificate chaining to the mesh roots required, and both kept current.

Each renewal or trust-bundle change builds a new :class:`ssl.SSLContext`; the listening
context's SNI callback (OpenSSL calls it on every handshake, with or without SNI) moves
each new connection to the newest one, so a renewed certificate is served and a pruned
root stops being trusted from the next handshake on, without re-binding the port.
Connections already open keep what they were made with.
"""

from __future__ import annotations

import ssl

from shoal.agent.identity import Svid
from shoal.agent.registration import load_identity


def server_context(chain: tuple[str, ...], key_pem: bytes, roots: tuple[str, ...]
                   ) -> ssl.SSLContext:
    """TLS 1.2+ with this certificate chain; a client certificate issued under ``roots``
    is required (the handshake fails without one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_identity(ctx, "".join(chain).encode(), key_pem)  # the key never touches disk
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="".join(roots))
    return ctx


class FollowingContext:
    """The server context of the latest SVID (see the module docstring)."""

    def __init__(self) -> None:
        self._current: ssl.SSLContext | None = None
        self.updates = 0

    @property
    def context(self) -> ssl.SSLContext | None:
        """The newest context (what a server should listen with); None before an SVID."""
        return self._current

    def update(self, svid: Svid) -> None:
        if not svid.bundle:
            return  # nothing to verify clients against: keep the previous context
        ctx = server_context(svid.chain, svid.key_pem, svid.bundle)
        ctx.sni_callback = self._newest
        self._current = ctx
        self.updates += 1

    def _newest(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        current = self._current
        if current is not None and current is not context:
            connection.context = current
