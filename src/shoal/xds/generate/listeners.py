"""Listener builders: the app's HTTP proxy port, local upstream ports (HTTP, TCP, TLS by
SNI), inbound ports."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from shoal.security import authn, plugin
from shoal.security.model import MtlsMode
from shoal.xds.generate import names
from shoal.xds.generate.protocol import (
    NO_EXTRAS,
    HcmExtras,
    http_connection_manager,
    socket_address,
    tcp_proxy,
)
from shoal.xds.generate.tcp_routes import Weighted, tcp_proxy_filter
from shoal.xds.generate.tls_routes import needs_inspector

LOCALHOST = "127.0.0.1"


def _listener(
    name: str,
    address: str,
    port: int,
    direction: int,
    network_filter: listener_components_pb2.Filter,
) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=socket_address(address, port),
        traffic_direction=direction,
        filter_chains=[listener_components_pb2.FilterChain(filters=[network_filter])],
    )


NO_ROUTE_BODY = ("shoal: no service matches host %REQ(:AUTHORITY)%, or no route of it "
                 "matches the request\n")


def no_route_reply() -> hcm_pb2.LocalReplyConfig:
    """The 404 Envoy sends when no route matches (response flag NR) says which host: with
    scoped routes an unknown host has no scope, hence no route."""
    return hcm_pb2.LocalReplyConfig(mappers=[hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=["NR"])),
        body_format_override=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=NO_ROUTE_BODY)))])


def outbound_http_listener(port: int, extras: HcmExtras = NO_EXTRAS, *, scoped: bool = True
                           ) -> listener_pb2.Listener:
    """127.0.0.1:port, the app's HTTP proxy: routes by Host header through the scopes of
    ``outbound_http`` (SRDS, see :mod:`vhosts`), or with ``scoped=False`` from one route
    configuration ``outbound_http`` (RDS)."""
    hcm = http_connection_manager(
        names.OUTBOUND_HTTP, extras=extras, local_reply=no_route_reply(),
        **({"scoped_by_host": names.OUTBOUND_HTTP} if scoped else {"rds": names.OUTBOUND_HTTP}))
    return _listener(names.OUTBOUND_HTTP, LOCALHOST, port, base_pb2.OUTBOUND, hcm)


def upstream_tcp_listener(
    host: str, port: int, local_port: int, cluster: str | Weighted,
    access_log: Sequence[accesslog_pb2.AccessLog] = (),
) -> listener_pb2.Listener:
    """A local TCP port: to one cluster, or split by weight (VirtualService ``tcp``)."""
    weighted: Weighted = ((cluster, 100),) if isinstance(cluster, str) else cluster
    f = tcp_proxy_filter(names.upstream_stat_prefix(host, port), weighted, access_log)
    return _listener(
        names.upstream_listener(host, port), LOCALHOST, local_port, base_pb2.OUTBOUND, f
    )


def upstream_tls_listener(
    host: str, port: int, local_port: int, chains: Sequence[listener_components_pb2.FilterChain],
) -> listener_pb2.Listener:
    """A local port of a TLS service port: the chains of :mod:`tls_routes` (SNI routes,
    then the catch-all), with a TLS inspector when some chain matches on SNI."""
    lis = listener_pb2.Listener(
        name=names.upstream_listener(host, port), address=socket_address(LOCALHOST, local_port),
        traffic_direction=base_pb2.OUTBOUND, filter_chains=list(chains))
    if needs_inspector(chains):
        lis.listener_filters.append(authn.tls_inspector())
    return lis


def upstream_http_listener(
    host: str, port: int, local_port: int, route_config: str, extras: HcmExtras = NO_EXTRAS
) -> listener_pb2.Listener:
    f = http_connection_manager(
        names.upstream_stat_prefix(host, port), rds=route_config, extras=extras
    )
    return _listener(
        names.upstream_listener(host, port), LOCALHOST, local_port, base_pb2.OUTBOUND, f
    )


def inbound_listener(
    name: str,
    address: str,
    port: int,
    cluster: str,
    route_config: route_pb2.RouteConfiguration | None,
    extras: HcmExtras = NO_EXTRAS,
    tcp_access_log: Sequence[accesslog_pb2.AccessLog] = (),
    security: plugin.InboundSecurity | None = None,
) -> listener_pb2.Listener:
    """HTTP (inline route table) when ``route_config`` is given, else a TCP proxy; filter
    chains per the port's mTLS mode, with the security plugin's filters first."""
    prefix = names.inbound_stat_prefix(port)
    sec = security or plugin.InboundSecurity(MtlsMode.DISABLE, NO_EXTRAS, ())

    def filters(mtls: bool) -> list[listener_components_pb2.Filter]:
        if route_config is not None:
            hcm_extras = sec.http_extras(mtls) + extras
            return [http_connection_manager(prefix, route_config=route_config,
                                            extras=hcm_extras)]
        return [*sec.network_filters, tcp_proxy(prefix, cluster, access_log=tcp_access_log)]

    chains, listener_filters = authn.filter_chains(sec.mode, route_config is not None, filters)
    return listener_pb2.Listener(
        name=name,
        address=socket_address(address, port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=chains,
        listener_filters=listener_filters,
    )
