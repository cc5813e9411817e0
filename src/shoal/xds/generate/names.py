"""Names of generated resources (Istio-like), in one place so every module agrees.

Cluster names double as EDS service names and appear in Envoy stats and logs:

* ``outbound|<port>|<subset>|<fqdn>`` (empty subset = every endpoint of the port)
* ``inbound|<app port>|<port name>``  (the local application)
"""

from __future__ import annotations

OUTBOUND_HTTP = "outbound_http"  # listener, stat prefix and route configuration


def outbound_cluster(port: int, subset: str | None, fqdn: str) -> str:
    return f"outbound|{port}|{subset or ''}|{fqdn}"


def sni(port: int, subset: str | None, fqdn: str) -> str:
    """TLS SNI a client sidecar sends to a mesh endpoint (Istio's spelling)."""
    return f"outbound_.{port}_.{subset or ''}_.{fqdn}"


def jwks_cluster(host: str, port: int) -> str:
    return f"jwks|{host}|{port}"


def inbound_cluster(app_port: int, port_name: str) -> str:
    return f"inbound|{app_port}|{port_name}"


def inbound_listener(port_name: str, endpoint_port: int) -> str:
    return f"inbound|{port_name}|{endpoint_port}"


def inbound_route(endpoint_port: int) -> str:
    return f"inbound|{endpoint_port}"


def inbound_stat_prefix(endpoint_port: int) -> str:
    return f"inbound_{endpoint_port}"


def upstream_listener(host: str, port: int) -> str:
    return f"upstream|{host}|{port}"


def upstream_route(fqdn: str, port: int) -> str:
    return f"upstream|{fqdn}|{port}"


def upstream_stat_prefix(host: str, port: int) -> str:
    return f"upstream_{host}_{port}"


def virtual_host(fqdn: str, port: int) -> str:
    return f"{fqdn}:{port}"
