"""The ``outbound_http`` table of a generated snapshot as one RouteConfiguration.

With scoped routes (docs/adr/0036) a proxy's outbound table is spread over SRDS scopes
(host name -> route configuration) and one route configuration per service port. Tests
that look at "the virtual host for reviews:9080" read it back as the single table an
ALLOW_ANY proxy gets: one virtual host per route configuration, named like its own,
with the scopes' host names as domains, in scope order.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from shoal.xds.generate import names
from shoal.xds.types import ROUTE, SCOPED_ROUTE, ProxySnapshot


def outbound_table(snap: ProxySnapshot) -> route_pb2.RouteConfiguration:
    routes = snap.get(ROUTE).items
    if names.OUTBOUND_HTTP in routes:  # ALLOW_ANY: one table already
        return routes[names.OUTBOUND_HTTP]  # type: ignore[return-value]
    table = route_pb2.RouteConfiguration(name=names.OUTBOUND_HTTP)
    by_rc: dict[str, rc_pb2.VirtualHost] = {}
    for host, scope in snap.get(SCOPED_ROUTE).items.items():
        name = scope.route_configuration_name  # type: ignore[attr-defined]
        if name not in by_rc:
            (vh,) = routes[name].virtual_hosts  # type: ignore[attr-defined]
            by_rc[name] = table.virtual_hosts.add()
            by_rc[name].CopyFrom(vh)
            del by_rc[name].domains[:]  # "*" in its own route configuration
        by_rc[name].domains.append(host)
    return table
