"""Small builders for the Envoy pieces every generator needs: config sources, network
filters (HTTP connection manager, TCP proxy), the router and HTTP/2 upstream options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, extension_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def pack(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def ads() -> config_source_pb2.ConfigSource:
    """Fetch over the aggregated (ADS) stream, API v3."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


@dataclass(frozen=True)
class HcmExtras:
    """What policy plugins (security, telemetry) add to an HTTP connection manager.

    Plugins return these; listener builders apply them. Keep them immutable so one value
    can be shared by every proxy it applies to.
    """

    http_filters: tuple[hcm_pb2.HttpFilter, ...] = ()  # run in order, before the router
    access_log: tuple[accesslog_pb2.AccessLog, ...] = ()
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None
    # Inbound mTLS: pass the caller's identity to the app (x-forwarded-client-cert).
    forward_client_cert: bool = False

    def __add__(self, other: HcmExtras) -> HcmExtras:
        return HcmExtras(
            http_filters=self.http_filters + other.http_filters,
            access_log=self.access_log + other.access_log,
            tracing=other.tracing or self.tracing,
            forward_client_cert=self.forward_client_cert or other.forward_client_cert,
        )


NO_EXTRAS = HcmExtras()


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    scoped_by_host: str | None = None,
    extras: HcmExtras = NO_EXTRAS,
    local_reply: hcm_pb2.LocalReplyConfig | None = None,
) -> listener_components_pb2.Filter:
    """An HCM (codec AUTO: HTTP/1.1, absolute-form URLs, h2c) with RDS, an inline table, or
    (``scoped_by_host``) scoped routes over ADS: SRDS scopes keyed by the whole Host
    header, each naming the route configuration (RDS) for that host."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=[*extras.http_filters, router()],
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(
            allow_absolute_url=wrappers_pb2.BoolValue(value=True)
        ),
        access_log=list(extras.access_log),
        # WebSocket over HTTP/1.1 passes through, as in Istio (without it Envoy refuses
        # the Upgrade with 403)
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(
            upgrade_type="websocket")],
    )
    if extras.tracing is not None:
        hcm.tracing.CopyFrom(extras.tracing)
    if local_reply is not None:
        hcm.local_reply_config.CopyFrom(local_reply)
    if extras.forward_client_cert:
        hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        hcm.set_current_client_cert_details.uri = True
        hcm.set_current_client_cert_details.subject.value = True
    if rds is not None:
        hcm.rds.CopyFrom(hcm_pb2.Rds(config_source=ads(), route_config_name=rds))
    elif route_config is not None:
        hcm.route_config.CopyFrom(route_config)
    elif scoped_by_host is not None:
        hcm.scoped_routes.CopyFrom(scoped_routes(scoped_by_host))
    else:  # pragma: no cover - programming error
        raise TypeError("http_connection_manager needs rds, route_config or scoped_by_host")
    return listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))


def scoped_routes(name: str) -> hcm_pb2.HttpConnectionManager.ScopedRoutes:
    """Scopes (SRDS) and their route configurations (RDS) over ADS, the key being the
    request's whole ``:authority`` (``reviews:9080``): the element separator is empty, so
    index 0 is the entire value."""
    key = hcm_pb2.ScopedRoutes.ScopeKeyBuilder
    extractor = key.FragmentBuilder.HeaderValueExtractor(name=":authority", index=0)
    return hcm_pb2.ScopedRoutes(
        name=name,
        scope_key_builder=key(fragments=[key.FragmentBuilder(header_value_extractor=extractor)]),
        rds_config_source=ads(),
        scoped_rds=hcm_pb2.ScopedRds(scoped_rds_config_source=ads()),
    )


def tcp_proxy(
    stat_prefix: str, cluster: str, *, access_log: Sequence[accesslog_pb2.AccessLog] = ()
) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix, cluster=cluster, access_log=list(access_log)
    )
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))


def http2_protocol_options() -> dict[str, any_pb2.Any]:
    """``typed_extension_protocol_options`` making a cluster speak HTTP/2 (h2c) upstream."""
    opts = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return {HTTP_PROTOCOL_OPTIONS: pack(opts)}


CARES_RESOLVER = "envoy.network.dns_resolver.cares"


def dns_resolver(upstreams: tuple[str, ...]) -> extension_pb2.TypedExtensionConfig:
    """Envoy's c-ares resolver asking exactly ``upstreams`` (``IP:PORT``), not the
    resolv.conf of the namespace Envoy runs in (a pod's points back at the sidecar)."""
    resolvers = []
    for text in upstreams:
        host, _, port = text.rpartition(":")
        resolvers.append(socket_address(host, int(port)))
    return extension_pb2.TypedExtensionConfig(
        name=CARES_RESOLVER,
        typed_config=pack(cares_dns_resolver_pb2.CaresDnsResolverConfig(resolvers=resolvers)))
