"""The hand-written baselines: two Envoys with minimal static bootstraps.

client Envoy: listener (HCM, HTTP/1.1) -> route "/" -> cluster "server" (the server Envoy)
server Envoy: listener (HCM, HTTP/1.1) -> route "/" -> cluster "app" (nginx)

Same path shape as shoal's outbound -> inbound sidecars; same binary and flags
(:class:`shoal.envoy.EnvoyProcess`: ``--concurrency 1``, log level warning).

With ``certs`` (:mod:`bench.certs`) the hop between the two Envoys is mTLS, the same
security work as shoal's sidecars: the client presents its SPIFFE certificate, checks the
server's chain and its URI SAN; the server requires a client certificate from the root.
ALPN ``http/1.1`` (what shoal negotiates for an HTTP service). No access log, no tracing,
no retries: what someone would write by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.certs import MeshCerts
from shoal.envoy import EnvoyProcess
from shoal.testing.local import free_port

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
ALPN = ["http/1.1"]


def _cert(certs: MeshCerts, side: str) -> dict[str, Any]:
    ident = certs.client if side == "client" else certs.server
    return {"certificate_chain": {"filename": str(ident.cert)},
            "private_key": {"filename": str(ident.key)}}


def upstream_mtls(certs: MeshCerts) -> dict[str, Any]:
    """Client side: our certificate, the root, the server's SPIFFE ID."""
    return {"name": TLS, "typed_config": {
        "@type": TLS_TYPES + "UpstreamTlsContext",
        "sni": "bench-server",
        "common_tls_context": {
            "alpn_protocols": ALPN,
            "tls_certificates": [_cert(certs, "client")],
            "validation_context": {
                "trusted_ca": {"filename": str(certs.root)},
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": certs.server.spiffe_id}}],
            },
        },
    }}


def downstream_mtls(certs: MeshCerts) -> dict[str, Any]:
    """Server side: our certificate; a client certificate from the root is required."""
    return {"name": TLS, "typed_config": {
        "@type": TLS_TYPES + "DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "alpn_protocols": ALPN,
            "tls_certificates": [_cert(certs, "server")],
            "validation_context": {"trusted_ca": {"filename": str(certs.root)}},
        },
    }}


def _listener(port: int, cluster: str, transport_socket: dict[str, Any] | None
              ) -> dict[str, Any]:
    hcm = {
        "@type": HCM,
        "stat_prefix": f"to_{cluster}",
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"},
                                           "route": {"cluster": cluster}}]}],
        },
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}],
    }
    chain: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                          "typed_config": hcm}]}
    if transport_socket:
        chain["transport_socket"] = transport_socket
    return {
        "name": f"listener_{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }


def _cluster(name: str, port: int, transport_socket: dict[str, Any] | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": port}}}}]}]},
    }
    if transport_socket:
        cluster["transport_socket"] = transport_socket
    return cluster


def bootstrap(listen_port: int, upstream_port: int, cluster: str, admin_port: int, *,
              listener_tls: dict[str, Any] | None = None,
              cluster_tls: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "node": {"id": f"bench-{cluster}", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [_listener(listen_port, cluster, listener_tls)],
                             "clusters": [_cluster(cluster, upstream_port, cluster_tls)]},
    }


class StaticEnvoys:
    """Envoys run from static bootstraps this benchmark writes: a client and a server on
    free ports; ``port`` is the client Envoy's listener."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server_port = free_port()
        self.admin_ports = (free_port(), free_port())
        self.envoys: list[EnvoyProcess] = []

    def add(self, run_dir: Path, doc: dict[str, Any]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "bootstrap.json"
        path.write_text(json.dumps(doc, indent=1))
        self.envoys.append(EnvoyProcess(path, run_dir=run_dir))

    @property
    def pids(self) -> list[int]:
        return [e.pid for e in self.envoys if e.pid is not None]

    def start(self) -> None:
        for e in self.envoys:
            e.start()

    def stop(self) -> None:
        for e in self.envoys:
            e.stop()


class EnvoyPair(StaticEnvoys):
    """The hand-written pair (plaintext, or mTLS with ``certs``)."""

    def __init__(self, workdir: Path, backend_port: int, *, certs: MeshCerts | None = None,
                 label: str = "pair") -> None:
        super().__init__()
        docs = (
            ("client", bootstrap(self.port, self.server_port, "server", self.admin_ports[0],
                                 cluster_tls=upstream_mtls(certs) if certs else None)),
            ("server", bootstrap(self.server_port, backend_port, "app", self.admin_ports[1],
                                 listener_tls=downstream_mtls(certs) if certs else None)),
        )
        for name, doc in docs:
            self.add(workdir / f"{label}-{name}", doc)
