"""What the control plane can tell about its proxies: sync status and live config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from shoal.errors import NotFound, Unavailable, ValidationError, Violation
from shoal.xds.types import Proxy

# `shoal proxy-config NAME TYPE` -> the config_dump section(s) holding that type.
CONFIG_SECTIONS = {
    "bootstrap": ("BootstrapConfigDump",),
    "listeners": ("ListenersConfigDump",),
    "routes": ("RoutesConfigDump", "ScopedRoutesConfigDump"),
    "clusters": ("ClustersConfigDump",),
    "endpoints": ("EndpointsConfigDump",),
    "secrets": ("SecretsConfigDump",),
}
CONFIG_TYPES = tuple(CONFIG_SECTIONS)


class ProxyInspector:
    def __init__(self, status: Callable[[], list[dict[str, Any]]],
                 proxies: Callable[[], dict[str, Proxy]], *,
                 latest: Callable[[str], str | None] = lambda node_id: None,
                 ready: Callable[[str, str], bool | None] = lambda ns, name: None,
                 admin_host: str = "127.0.0.1"):
        """``latest``: the version of the newest snapshot computed for a node (None: none),
        which its stream may not have picked up yet."""
        self._status = status
        self._proxies = proxies
        self._latest = latest
        self._ready = ready  # (namespace, workload) -> is it an endpoint yet? None: unknown
        self._admin_host = admin_host

    def status(self) -> list[dict[str, Any]]:
        """Each proxy's sync status. SYNCED means synced with the newest config computed
        for it: a stream that has not taken its newest snapshot yet is STALE."""
        proxies = self._proxies()
        out = []
        for entry in self._status():
            node_id = entry.get("node_id", "")
            proxy = proxies.get(node_id)
            if proxy is not None:
                entry = {**entry, "workload": proxy.workload, "namespace": proxy.namespace,
                         "admin_port": proxy.metadata.admin_port,
                         "ready": self._ready(proxy.namespace, proxy.workload)}
            latest = self._latest(node_id)
            if entry.get("sync") == "SYNCED" and latest not in (None,
                                                                entry.get("snapshot_version")):
                entry = {**entry, "sync": "STALE"}
            out.append(entry)
        return sorted(out, key=lambda e: e.get("node_id", ""))

    def find(self, name: str) -> Proxy:
        """A proxy by node id, or by workload name when that is unambiguous."""
        proxies = self._proxies()
        if name in proxies:
            return proxies[name]
        matches = [p for p in proxies.values() if p.workload == name
                   or p.node_id.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no connected proxy named {name!r}")
        names = ", ".join(sorted(p.node_id for p in matches))
        raise NotFound(f"{name!r} matches several proxies: {names}")

    async def config_dump(self, name: str, kind: str | None = None) -> dict[str, Any]:
        if kind is not None and kind not in CONFIG_SECTIONS:
            raise ValidationError([Violation("type", f"must be one of {', '.join(CONFIG_TYPES)}")])
        proxy = self.find(name)
        port = proxy.metadata.admin_port
        if not port:
            raise Unavailable(f"proxy {proxy.node_id} did not report an admin port")
        url = f"http://{self._admin_host}:{port}/config_dump?include_eds"
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                resp = await client.get(url)
                resp.raise_for_status()
        except httpx.HTTPError as e:
            raise Unavailable(f"cannot read {proxy.node_id}'s Envoy admin at {url}: {e}") from e
        configs = resp.json().get("configs", [])
        if kind is not None:
            wanted = CONFIG_SECTIONS[kind]
            configs = [c for c in configs if c.get("@type", "").rsplit(".", 1)[-1] in wanted]
        return {"node_id": proxy.node_id, "configs": configs}
