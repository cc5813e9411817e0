"""A sidecar's ``outbound_http`` listener (the application's HTTP proxy port) and what it
routes by: scoped routes (SRDS) picking a service port's route configuration by Host,
or, when the Sidecar allows any host, one route table with a catch-all to the dynamic
forward proxy (:mod:`vhosts`, :mod:`egress`).

The listener, the scopes of a (namespace, Sidecar scope) and the route configurations of
a (route labels, Sidecar scope) are each built once per snapshot and shared by every
proxy that has them. The scopes are a table (:meth:`GenerationContext.table`) taken over
by the next snapshot when a change touches none of :data:`SCOPE_INPUTS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from shoal.api.meta import ResourceKey
from shoal.registry.gateways import GATEWAY_KINDS
from shoal.xds.generate import (
    http_filters,
    listeners,
    names,
    routes,
    vhosts,
)
from shoal.xds.generate.base import Generator, Labels, Part, ProxyView
from shoal.xds.generate.context import equal_or
from shoal.xds.generate.scope import Scope
from shoal.xds.types import Resources

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

# Kinds the host names of the services depend on (a scope per service host and port).
SCOPE_INPUTS = frozenset({"Service", "ServiceEntry", "Sidecar", "Gateway", "RateLimitPolicy",
                          "TokenRevocation"} | GATEWAY_KINDS)
INPUTS = SCOPE_INPUTS | routes.INPUTS



class _Scopes(dict[tuple[str, ResourceKey | None], Resources]):
    """(namespace, Sidecar scope) -> the scopes of its proxies."""

    def reusable(self) -> Iterator[tuple[tuple[object, ...], Resources]]:
        """The scopes the next snapshot may reuse when equal in content."""
        yield from ((("scopes", *k), v) for k, v in self.items())


def listener(ctx: GenerationContext, port: int, allow_any: bool = False
             ) -> listener_pb2.Listener:
    """The ``outbound_http`` listener on ``port`` (shared)."""
    def build() -> listener_pb2.Listener:
        return listeners.outbound_http_listener(
            port, http_filters.outbound(ctx, allow_any=allow_any), scoped=not allow_any)
    return ctx.memo(("outbound_http", "listener", port, allow_any), build)  # type: ignore[no-any-return]


def route_table(ctx: GenerationContext, namespace: str, labels: Labels = (),
                within: Scope | None = None) -> route_pb2.RouteConfiguration:
    """The one route table of ``outbound_http`` for proxies of ``namespace`` whose Sidecar
    allows any host (a catch-all to the forward proxy); without scoping, for tests and
    ``shoal proxy-config``."""
    within = within or ctx.scope(None)

    def build() -> route_pb2.RouteConfiguration:
        visible = None if within.key is None else (
            lambda svc: within.visible(ctx.mesh, svc))
        return vhosts.outbound_route_config(
            ctx.mesh, namespace, lambda s, p: ctx.routes(s, p, labels), visible)
    return ctx.memo(("outbound_http", "table", namespace, labels, within.key),  # type: ignore[no-any-return]
                    build)


def scopes(ctx: GenerationContext, namespace: str, within: Scope) -> Resources:
    """The SRDS scopes of ``outbound_http`` for proxies of ``namespace`` under
    ``within``, shared by all of them."""
    table = ctx.table("scopes", SCOPE_INPUTS, lambda _: _Scopes())
    key = (namespace, within.key)
    if key not in table:
        old = ctx.before(("scopes", *key))
        visible = None if within.key is None else (
            lambda svc: within.visible(ctx.mesh, svc))
        items = vhosts.outbound_scopes(ctx.mesh, namespace, visible)
        if isinstance(old, Resources):
            items = {h: equal_or(old.items, h, sc) for h, sc in items.items()}
        table[key] = ctx.same_set(("scopes", *key), items)
    return table[key]


def service_route_configs(ctx: GenerationContext, labels: Labels, within: Scope) -> Resources:
    """The route configuration of every HTTP service port ``within`` sees, for proxies
    whose workload has ``labels`` (the scopes' targets, and a captured connection's):
    one shared Resources per (labels, scope)."""
    key = ("service_routes", labels, within.key)

    def build() -> Resources:
        items: dict[str, Message] = {}
        for service in ctx.mesh.services:
            if within.visible(ctx.mesh, service):
                for port in vhosts.http_ports(service):
                    rc = ctx.upstream_route_config(service, port, labels)
                    items[rc.name] = rc
        return ctx.same_set(key, items)
    return ctx.memo(key, build)  # type: ignore[no-any-return]


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    port = view.proxy.metadata.outbound_port
    if not port:
        return
    within = view.within
    lis = listener(ctx, port, within.allow_any)
    if within.allow_any:  # no fallback scope: one table with a catch-all (vhosts.py)
        yield Part(lis, routes={names.OUTBOUND_HTTP: route_table(
            ctx, view.proxy.namespace, view.labels, within)})
    else:
        yield Part(lis, scopes=scopes(ctx, view.proxy.namespace, within),
                   service_routes=service_route_configs(ctx, view.labels, within))


GENERATOR = Generator("outbound_http", INPUTS, _parts)
