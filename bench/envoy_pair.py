"""The hand-written baseline: two Envoys with minimal static bootstraps.

client Envoy: listener (HCM, HTTP/1.1) -> route "/" -> cluster "server" (the server Envoy)
server Envoy: listener (HCM, HTTP/1.1) -> route "/" -> cluster "app" (nginx)

Same path shape as shoal's outbound -> inbound sidecars; same binary and flags
(:class:`shoal.envoy.EnvoyProcess`: ``--concurrency 1``, log level warning).

``shoal_like=True`` adds what shoal's generated config has and the minimal pair lacks
(route retry policy and ``timeout: 0s``, unlimited circuit breakers,
``allow_absolute_url``): an ablation that tells config cost from noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal.envoy import EnvoyProcess
from shoal.testing.local import free_port

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PREVIOUS_HOSTS = ("type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                  "PreviousHostsPredicate")
UNLIMITED = 4294967295


def shoal_route_extras() -> dict[str, Any]:
    """What shoal's generated route action adds (Istio's default retries, no timeout)."""
    return {
        "timeout": "0s",
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,"
                        "retriable-status-codes",
            "num_retries": 2,
            "retriable_status_codes": [503],
            "host_selection_retry_max_attempts": 5,
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS},
            }],
        },
    }


def _listener(port: int, cluster: str, shoal_like: bool = False) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster, **(shoal_route_extras() if shoal_like else {})}
    hcm = {
        "@type": HCM,
        "stat_prefix": f"to_{cluster}",
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"},
                                           "route": action}]}],
        },
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}],
    }
    if shoal_like:
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    return {
        "name": f"listener_{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _cluster(name: str, port: int, shoal_like: bool = False) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if shoal_like:
        extras["circuit_breakers"] = {"thresholds": [{
            k: UNLIMITED for k in ("max_connections", "max_pending_requests", "max_requests",
                                   "max_retries")}]}
    return {
        **extras,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": port}}}}]}]},
    }


def bootstrap(listen_port: int, upstream_port: int, cluster: str, admin_port: int,
              shoal_like: bool = False) -> dict[str, Any]:
    return {
        "node": {"id": f"bench-{cluster}", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [_listener(listen_port, cluster, shoal_like)],
                             "clusters": [_cluster(cluster, upstream_port, shoal_like)]},
    }


class EnvoyPair:
    """Start/stop the two Envoys; ``port`` is the client Envoy's listener."""

    def __init__(self, workdir: Path, backend_port: int, *, shoal_like: bool = False,
                 label: str = "pair") -> None:
        self.port = free_port()
        self.server_port = free_port()
        self.admin_ports = (free_port(), free_port())
        self.envoys: list[EnvoyProcess] = []
        for name, listen, upstream, cluster, admin in (
            ("client", self.port, self.server_port, "server", self.admin_ports[0]),
            ("server", self.server_port, backend_port, "app", self.admin_ports[1]),
        ):
            run_dir = workdir / f"{label}-{name}"
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "bootstrap.json"
            doc = bootstrap(listen, upstream, cluster, admin, shoal_like)
            path.write_text(json.dumps(doc, indent=2))
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
