"""Unprivileged mode's inherent gap, said where the operator sees it.

Without a pod (``--pod``), the application listens on a port of the host's loopback and
its sidecar forwards to it. Any process on the host can call that port directly and skip
the sidecar: STRICT mTLS and authorization protect the sidecar's port, not the app's
(docs/security.md#unprivileged-mode). The agent reads what its Envoy really enforces on
the inbound port (its ``/config_dump``) and warns once whenever that becomes protected.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("shoal.agent")
_AUTHZ_FILTERS = ("envoy.filters.http.rbac", "envoy.filters.network.rbac",
                  "envoy.filters.http.jwt_authn")


@dataclass(frozen=True)
class Protection:
    strict_mtls: bool  # the sidecar's inbound port refuses plaintext
    authz: bool  # authorization / JWT filters run there

    @property
    def any(self) -> bool:
        return self.strict_mtls or self.authz


def inbound_protection(dump: dict[str, Any], inbound_port: int) -> Protection | None:
    """What Envoy enforces on the listener bound to INBOUND_PORT (None: not there)."""
    # ?resource=dynamic_listeners lists the listeners themselves; a full dump nests them
    entries = [e for c in dump.get("configs", [])
               for e in (c.get("dynamic_listeners") or [c])]
    for entry in entries:
        listener = (entry.get("active_state") or {}).get("listener") or {}
        port = ((listener.get("address") or {}).get("socket_address") or {}) \
            .get("port_value")
        if port != inbound_port:
            continue
        chains = listener.get("filter_chains") or []
        text = str(chains)
        return Protection(
            strict_mtls=bool(chains) and all(c.get("name") == "mtls" for c in chains),
            authz=any(name in text for name in _AUTHZ_FILTERS))
    return None


def warning(workload: str, app_port: int, p: Protection) -> str:
    what = " and ".join(w for w, on in (("STRICT mTLS", p.strict_mtls),
                                         ("authorization", p.authz)) if on)
    return (f"{what} protect {workload}'s sidecar, but its application listens on "
            f"127.0.0.1:{app_port}, where any process on this host can call it directly "
            "without either (unprivileged mode). Run it as a pod (--pod, root) or keep "
            "untrusted users and processes off this host; see "
            "docs/security.md#unprivileged-mode")


async def watch(admin_port: int, inbound_port: int, workload: str, app_port: int,
                interval: float = 5.0) -> None:
    """For ever: warn once each time the inbound port becomes protected."""
    warned: Protection | None = None
    url = f"http://127.0.0.1:{admin_port}/config_dump"
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while True:
            try:
                r = await client.get(url, params={"resource": "dynamic_listeners"})
                now = inbound_protection(r.json(), inbound_port) if r.is_success else None
            except (httpx.HTTPError, ValueError):
                now = None  # Envoy restarting: ask again later
            if now is not None and now.any and now != warned:
                log.warning(warning(workload, app_port, now),
                            extra={"app_port": app_port, "workload": workload})
            if now is not None:
                warned = now if now.any else None
            await asyncio.sleep(interval)
