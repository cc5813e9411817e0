"""What the ADS server tells the rest of the control plane about connections."""

from __future__ import annotations

from typing import Protocol

from shoal.xds.types import Proxy


class ConnectionHooks(Protocol):
    """Implemented by the control plane (sync): compute snapshots for connected proxies.

    ``proxy_connected`` is awaited for every new stream, after its node was parsed; it
    should put the proxy's snapshot in the cache (the stream waits for it). Several
    streams of one node id may overlap (Envoy reconnecting): ``proxy_disconnected`` is
    called only when the node's last stream ends.
    """

    async def proxy_connected(self, proxy: Proxy) -> None: ...

    async def proxy_disconnected(self, node_id: str) -> None: ...


class NoHooks:
    """Hooks that do nothing (snapshots are put in the cache by someone else)."""

    async def proxy_connected(self, proxy: Proxy) -> None:
        return None

    async def proxy_disconnected(self, node_id: str) -> None:
        return None
