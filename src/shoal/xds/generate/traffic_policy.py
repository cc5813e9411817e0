"""DestinationRule ``trafficPolicy`` -> changes to an outbound cluster (pure functions).

    cluster = apply_traffic_policy(cluster, policy_for(dr, subset, port), port)

Load balancer, connection pool (circuit breakers, connect timeout, keepalive, HTTP
connection options), outlier detection and ``tls``: DISABLE (plaintext), ISTIO_MUTUAL (mesh
mTLS, unchanged) and SIMPLE / MUTUAL (TLS origination: one TLS transport socket for every
endpoint, replacing mesh mTLS for this cluster, as in Istio). The consistent-hash
*key* lives on the routes (see :mod:`shoal.xds.generate.hashing`). Without a policy the
cluster keeps the mesh defaults of ADR 0006 (outlier detection off).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.v3 import percent_pb2

from shoal.api.meta import Resource
from shoal.api.traffic_policy import (
    ConnectionPoolSettings,
    H2UpgradePolicy,
    LoadBalancerSettings,
    OutlierDetection,
    SimpleLB,
    TLSMode,
    TrafficPolicy,
    merge,
)
from shoal.xds.generate import tls
from shoal.xds.generate.protocol import HTTP_PROTOCOL_OPTIONS, duration, pack

_SIMPLE = {
    SimpleLB.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    SimpleLB.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    SimpleLB.LEAST_CONN: cluster_pb2.Cluster.LEAST_REQUEST,
    SimpleLB.RANDOM: cluster_pb2.Cluster.RANDOM,
}


def policy_for(dr: Resource | None, subset: str | None, port: int) -> TrafficPolicy | None:
    """The policy of one outbound cluster: the DestinationRule's, overridden field by field
    by its portLevelSettings, then by the subset's (Istio's merge order)."""
    if dr is None:
        return None
    sub = dr.spec.subset(subset) if subset else None
    return merge(dr.spec.traffic_policy, sub.traffic_policy if sub is not None else None, port)


def tls_mode(policy: TrafficPolicy | None) -> TLSMode | None:
    """The TLS mode a policy asks for (None: not set, auto mTLS decides)."""
    return policy.tls.mode if policy is not None and policy.tls is not None else None


def apply_traffic_policy(cluster: cluster_pb2.Cluster, policy: TrafficPolicy | None,
                         port: int, host: str = "", alpn: Sequence[str] = ()
                         ) -> cluster_pb2.Cluster:
    """A copy of ``cluster`` with ``policy`` (resolved for ``port``) applied; the cluster
    itself, unchanged, when there is no policy. ``host`` (the destination's name: default
    SNI) and ``alpn`` (of the port's protocol) are used by TLS origination."""
    if policy is None:
        return cluster
    policy = policy.for_port(port)
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    if policy.load_balancer is not None:
        _load_balancer(out, policy.load_balancer)
    if policy.connection_pool is not None:
        _connection_pool(out, policy.connection_pool)
    if policy.outlier_detection is not None:
        _outlier_detection(out, policy.outlier_detection)
    if tls_mode(policy) is TLSMode.DISABLE:
        out.ClearField("transport_socket_matches")
        out.ClearField("transport_socket")
    elif policy.tls is not None and policy.tls.originates:
        out.ClearField("transport_socket_matches")  # replaces mesh mTLS (Istio does too)
        out.transport_socket.CopyFrom(tls.origination_socket(policy.tls, host, alpn))
    return out


def _load_balancer(c: cluster_pb2.Cluster, lb: LoadBalancerSettings) -> None:
    if lb.simple is not None and lb.simple in _SIMPLE:
        c.lb_policy = _SIMPLE[lb.simple]
    ch = lb.consistent_hash
    if ch is None:
        return
    if ch.maglev is not None:
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        c.maglev_lb_config.table_size.value = ch.maglev.table_size
    else:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        size = ch.ring_hash.minimum_ring_size if ch.ring_hash else ch.minimum_ring_size
        if size:
            c.ring_hash_lb_config.minimum_ring_size.value = size


def _http_options(c: cluster_pb2.Cluster) -> hpo_pb2.HttpProtocolOptions:
    opts = hpo_pb2.HttpProtocolOptions()
    if HTTP_PROTOCOL_OPTIONS in c.typed_extension_protocol_options:
        c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(opts)
    else:
        opts.explicit_http_config.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return opts


def _connection_pool(c: cluster_pb2.Cluster, pool: ConnectionPoolSettings) -> None:
    limits = c.circuit_breakers.thresholds[0] if c.circuit_breakers.thresholds else \
        c.circuit_breakers.thresholds.add()
    opts = _http_options(c)
    common = opts.common_http_protocol_options
    touched = False
    if pool.tcp is not None:
        tcp = pool.tcp
        if tcp.max_connections is not None:
            limits.max_connections.value = tcp.max_connections
        if tcp.connect_timeout is not None:
            c.connect_timeout.CopyFrom(duration(tcp.connect_timeout.seconds))
        if tcp.tcp_keepalive is not None:
            ka = tcp.tcp_keepalive
            keep = address_pb2.TcpKeepalive()
            if ka.probes is not None:
                keep.keepalive_probes.value = ka.probes
            if ka.time is not None:
                keep.keepalive_time.value = max(1, round(ka.time.seconds))
            if ka.interval is not None:
                keep.keepalive_interval.value = max(1, round(ka.interval.seconds))
            c.upstream_connection_options.tcp_keepalive.CopyFrom(keep)
        if tcp.max_connection_duration is not None:
            common.max_connection_duration.CopyFrom(
                duration(tcp.max_connection_duration.seconds))
            touched = True
    if pool.http is not None:
        http = pool.http
        if http.http1_max_pending_requests is not None:
            limits.max_pending_requests.value = http.http1_max_pending_requests
        if http.http2_max_requests is not None:
            limits.max_requests.value = http.http2_max_requests
        if http.max_retries is not None:
            limits.max_retries.value = http.max_retries
        if http.max_requests_per_connection:  # 0 means unlimited, as in Istio
            common.max_requests_per_connection.value = http.max_requests_per_connection
            touched = True
        if http.idle_timeout is not None:
            common.idle_timeout.CopyFrom(duration(http.idle_timeout.seconds))
            touched = True
        if http.h2_upgrade_policy is H2UpgradePolicy.UPGRADE:
            opts.explicit_http_config.http2_protocol_options.CopyFrom(
                protocol_pb2.Http2ProtocolOptions())
            touched = True
    if touched:
        c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(opts))


def _outlier_detection(c: cluster_pb2.Cluster, od: OutlierDetection) -> None:
    out = outlier_detection_pb2.OutlierDetection()
    if od.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = od.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            100 if od.consecutive_gateway_errors else 0)
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if od.consecutive_local_origin_failures is not None:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
    if od.interval is not None:
        out.interval.CopyFrom(duration(od.interval.seconds))
    if od.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time.seconds))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    c.outlier_detection.CopyFrom(out)
    # Istio: below minHealthPercent healthy hosts, ignore ejections (panic); default 0
    c.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=float(od.min_health_percent)))


