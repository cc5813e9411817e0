"""What each kind of HTTP connection manager carries besides its routes: its HTTP filters
(in order, before the router) and its per-request telemetry. The place to add a filter.

* **outbound** — the app's HTTP proxy (``outbound_http``) and its upstream ports: the
  dynamic forward proxy (``ALLOW_ANY`` only), CORS, fault; telemetry outbound, the
  source reporting.
* **inbound** — a workload port (and a captured pod's): JWT, ext_authz, RBAC (the port's
  security, :mod:`shoal.security.plugin`), then rate limits; telemetry inbound, the destination
  reporting.
* **gateway** — an Istio or Gateway API HTTP(S) server: JWT, ext_authz, RBAC of the
  gateway workload, CORS, fault; telemetry inbound, the gateway reporting as the source
  (as Istio's gateways do).

Each plugin returns an :class:`~shoal.xds.generate.protocol.HcmExtras`; listener builders
hand it to :func:`~shoal.xds.generate.protocol.http_connection_manager`. The inbound
security filters depend on the filter chain (mTLS or plaintext: the caller's identity
is forwarded on mTLS chains only), so :func:`shoal.xds.generate.listeners.inbound_listener`
puts them first per chain; everything else is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.api.meta import Resource
from shoal.ratelimit import plugin as ratelimit
from shoal.telemetry.model import Reporter
from shoal.xds.generate import egress, route_filters, telemetry
from shoal.xds.generate.protocol import HcmExtras

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext


def outbound(ctx: GenerationContext, *, allow_any: bool = False) -> HcmExtras:
    """The app's outbound HCMs; ``allow_any``: unknown hosts go to the dynamic forward
    proxy (ALLOW_ANY), whose filter comes first."""
    extras = route_filters.TRAFFIC_EXTRAS + telemetry.http_extras(
        ctx, telemetry.Direction.OUTBOUND)
    return egress.forward_proxy_extras() + extras if allow_any else extras


def inbound(ctx: GenerationContext, workload: Resource) -> HcmExtras:
    """A workload port's HCM, after its security filters (added per filter chain)."""
    return ratelimit.inbound_extras(ctx, workload) + telemetry.http_extras(
        ctx, telemetry.Direction.INBOUND)


def gateway(ctx: GenerationContext, workload: Resource, port: int) -> HcmExtras:
    """A gateway server's HCM: the policies selecting the gateway workload, as on a
    sidecar's inbound port, then the routes' CORS and fault filters."""
    security = ctx.inbound_security(workload, port, is_http=True).http
    return security + route_filters.TRAFFIC_EXTRAS + telemetry.http_extras(
        ctx, telemetry.Direction.INBOUND, Reporter.SOURCE)
