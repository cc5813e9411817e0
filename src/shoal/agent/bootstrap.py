"""The sidecar's Envoy bootstrap: admin, node identity and ADS — nothing else.

Every listener, cluster and route comes from the control plane over xDS; the bootstrap
only says who this Envoy is and where to fetch the rest. :func:`build_bootstrap` is a
pure function returning a JSON-serialisable dict (Envoy reads JSON as YAML).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

XDS_CLUSTER = "xds_cluster"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def locality(text: str) -> dict[str, str]:
    """``region/zone/subzone`` (any suffix may be missing) as an Envoy Locality."""
    parts = [p for p in text.split("/")] if text else []
    keys = ("region", "zone", "sub_zone")
    return {k: v for k, v in zip(keys, parts, strict=False) if v}


def xds_cluster(host: str, port: int, *, connect_timeout_s: float = 1.0) -> dict[str, Any]:
    """The static cluster that reaches the control plane's gRPC (HTTP/2) xDS endpoint."""
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": f"{connect_timeout_s:g}s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port},
            }}}]}],
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


def build_bootstrap(
    *,
    node_id: str,
    cluster: str,
    metadata: Mapping[str, Any],
    admin_port: int,
    xds_host: str,
    xds_port: int,
    delta: bool = False,
    locality_text: str = "",
    admin_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Bootstrap for one sidecar: node, admin on ``admin_host:admin_port``, LDS+CDS over ADS."""
    node: dict[str, Any] = {"id": node_id, "cluster": cluster, "metadata": dict(metadata)}
    if loc := locality(locality_text):
        node["locality"] = loc
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": node,
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
        "static_resources": {"clusters": [xds_cluster(xds_host, xds_port)]},
    }
