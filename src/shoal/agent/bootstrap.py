"""The sidecar's Envoy bootstrap: admin, node identity and ADS — nothing else.

Every listener, cluster and route comes from the control plane over xDS; the bootstrap
only says who this Envoy is and where to fetch the rest. :func:`build_bootstrap` is a
pure function returning a JSON-serialisable dict (Envoy reads JSON as YAML).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from shoal.api.mesh import split_locality
from shoal.netaddr import is_ip
from shoal.telemetry import envoy_stats as es
from shoal.telemetry.model import LATENCY_BUCKETS_MS
from shoal.xds.generate.protocol import dns_resolver
from shoal.xds.types import SDS_CLUSTER, SECRET_ROOT_CA, SECRET_WORKLOAD_CERT, XDS_CLUSTER

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CONTROL_PLANE_NAME = "shoal-control-plane"  # SNI and SAN of the control plane's certificate



def locality(text: str) -> dict[str, str]:
    """``region/zone/subzone`` (any suffix may be missing) as an Envoy Locality."""
    keys = ("region", "zone", "sub_zone")
    return {k: v for k, v in zip(keys, split_locality(text), strict=True) if v}


def xds_cluster(host: str, port: int, *, connect_timeout_s: float = 1.0,
                more: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """The static cluster that reaches the control plane's gRPC (HTTP/2) xDS endpoint.

    ``more``: further control-plane instances (HA). Each is one endpoint of the cluster;
    when the ADS stream breaks, Envoy opens the next one through the load balancer
    (round robin), so a dead instance costs one refused connect before another takes
    over (docs/adr/0012-ha-control-plane.md)."""
    addresses = [(host, port), *more]
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if all(is_ip(h) for h, _ in addresses) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": f"{connect_timeout_s:g}s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": h, "port_value": p},
            }}} for h, p in addresses]}],
        },
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {
                    # Detect a dead control plane connection without waiting for TCP.
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                }},
            },
        },
        "upstream_connection_options": {
            "tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5},
        },
    }


def _http2() -> dict[str, Any]:
    return {HTTP_PROTOCOL_OPTIONS: {
        "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
        "explicit_http_config": {"http2_protocol_options": {}},
    }}


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """The static cluster reaching the agent's SDS server on a Unix socket (HTTP/2)."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "pipe": {"path": socket_path}}}}]}],
        },
        "typed_extension_protocol_options": _http2(),
    }


def sds_secret(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": {
        "api_config_source": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        "resource_api_version": "V3",
    }}


def xds_tls(*, client_cert: bool, ca_file: str = "") -> dict[str, Any]:
    """TLS to the control plane: verify it against the trust bundle and its name; with a
    workload certificate, the bundle comes over SDS (ROOTCA, so root rotations reach it)
    and the certificate is presented; without one, the bundle is read from ``ca_file``."""
    san = {"match_typed_subject_alt_names": [
        {"san_type": "DNS", "matcher": {"exact": CONTROL_PLANE_NAME}}]}
    common: dict[str, Any]
    if client_cert:
        common = {"combined_validation_context": {
            "default_validation_context": san,
            "validation_context_sds_secret_config": sds_secret(SECRET_ROOT_CA),
        }, "tls_certificate_sds_secret_configs": [sds_secret(SECRET_WORKLOAD_CERT)]}
    else:
        common = {"validation_context": {"trusted_ca": {"filename": ca_file}, **san}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": f"type.googleapis.com/{UPSTREAM_TLS}",
        "sni": CONTROL_PLANE_NAME,
        "common_tls_context": common,
    }}


# Envoy's Zipkin reporter posts a batch every flush interval (5 s) or every
# ``min_flush_spans`` spans (default 5): at 1 % sampling of 1,000 req/s that was two
# POSTs a second per sidecar, each costing the control plane more than its spans. 20
# spans a batch (still at least every 5 s) cuts that fourfold; much larger batches made
# Envoy's workers stall serializing them at 100 % sampling (docs/benchmarks.md, 2026-11-22).
ZIPKIN_MIN_FLUSH_SPANS = 20


def runtime_settings() -> dict[str, Any]:
    """Runtime: shoal's static values, then an admin layer (``/runtime_modify`` works
    as it does without a layered runtime)."""
    return {"layered_runtime": {"layers": [
        {"name": "shoal", "static_layer": {
            "tracing.zipkin.min_flush_spans": ZIPKIN_MIN_FLUSH_SPANS}},
        {"name": "admin", "admin_layer": {}}]}}


def stats_settings() -> dict[str, Any]:
    """Bootstrap fields for the per-edge stats (shoal.telemetry.envoy_stats): Istio's
    latency buckets for the duration histogram, and histograms merged when the agent reads
    the admin endpoint (they show the previous merge, so they lag counters by one read)."""
    return {
        "stats_flush_on_admin": True,
        "stats_config": {"histogram_bucket_settings": [{
            "match": {"prefix": f"{es.PREFIX}."},
            "buckets": [float(b) for b in LATENCY_BUCKETS_MS]}]},
    }


def build_bootstrap(
    *,
    node_id: str,
    cluster: str,
    metadata: Mapping[str, Any],
    admin_port: int,
    xds_host: str,
    xds_port: int,
    delta: bool = True,
    locality_text: str = "",
    admin_host: str = "127.0.0.1",
    sds_socket: str | None = None,
    xds_ca_file: str = "",
    client_cert: bool = False,
    more_xds: Sequence[tuple[str, int]] = (),
    dns_upstreams: Sequence[str] = (),
) -> dict[str, Any]:
    """Bootstrap for one sidecar: node, admin on ``admin_host:admin_port``, LDS+CDS over ADS.
    ``more_xds``: the xDS addresses of further control-plane instances (HA);
    ``dns_upstreams`` (``IP:PORT``): the resolvers Envoy itself uses (DNS clusters), instead
    of the resolv.conf it sees (in a pod that one points back at the sidecar)."""
    node: dict[str, Any] = {"id": node_id, "cluster": cluster, "metadata": dict(metadata)}
    if loc := locality(locality_text):
        node["locality"] = loc
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    xds = xds_cluster(xds_host, xds_port, more=more_xds)
    if xds_ca_file:  # xDS over TLS
        xds["transport_socket"] = xds_tls(client_cert=client_cert, ca_file=xds_ca_file)
    clusters = [xds] + ([sds_cluster(sds_socket)] if sds_socket else [])
    resolver = {"typed_dns_resolver_config": json_format.MessageToDict(
        dns_resolver(tuple(dns_upstreams)))} if dns_upstreams else {}
    return {
        **resolver,
        "node": node,
        **stats_settings(),
        **runtime_settings(),
        "admin": {
            "address": {"socket_address": {"address": admin_host, "port_value": admin_port}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "lds_config": ads_source,
            "cds_config": dict(ads_source),
        },
        "static_resources": {"clusters": clusters},
    }
