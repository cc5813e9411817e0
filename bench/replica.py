"""Static replicas of shoal's sidecars, for ablations without changing shoal.

A replica pair is two more Envoys whose bootstraps are the running sidecars' own
(``<run dir>/envoy-bootstrap.json``: node, ``xds_cluster``, ``sds-grpc``) with the
dynamic resources from their ``/config_dump`` made static: the client's outbound
listener (RDS inlined), the server's inbound listener, every cluster (EDS inlined).
Ports are rewritten so the client replica sends to the server replica. Certificates still
come from the agents over SDS and telemetry still streams to the control plane, so
``full`` is shoal as shipped, minus xDS; each variant then switches one thing off by
editing the JSON (:data:`VARIANTS`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.configdiff import config_dump
from bench.envoy_pair import StaticEnvoys

OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
FILE_LOGGER = "envoy.access_loggers.file"
STATS_LOGGER = "envoy.access_loggers.stats"
CORS_FILTER = "envoy.filters.http.cors"
FAULT_FILTER = "envoy.filters.http.fault"
SPAN_BATCH = 100
LOG_BATCH_BYTES = 1 << 20
Json = dict[str, Any]


def _walk(node: Any) -> Iterator[Json]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _hcms(doc: Json) -> Iterator[Json]:
    return (d for d in _walk(doc) if str(d.get("@type", "")).endswith("HttpConnectionManager"))


def drop_logger(name: str) -> Callable[[Json], None]:
    def edit(doc: Json) -> None:
        for hcm in _hcms(doc):
            hcm["access_log"] = [a for a in hcm.get("access_log", []) if a.get("name") != name]
    return edit


def sampling(percent: float) -> Callable[[Json], None]:
    def edit(doc: Json) -> None:
        for hcm in _hcms(doc):
            if "tracing" in hcm:
                hcm["tracing"]["random_sampling"] = {"value": percent}
    return edit


def no_tracing(doc: Json) -> None:
    for hcm in _hcms(doc):
        hcm.pop("tracing", None)


def b3_only(doc: Json) -> None:
    """The Zipkin tracer's default propagation (B3 only): no W3C ``traceparent``."""
    for hcm in _hcms(doc):
        tracer = hcm.get("tracing", {}).get("provider", {}).get("typed_config", {})
        tracer.pop("trace_context_option", None)


def no_retries(doc: Json) -> None:
    for d in _walk(doc):
        if isinstance(d.get("route"), dict) and "match" in d:
            d["route"].pop("retry_policy", None)


def no_xfcc(doc: Json) -> None:
    for hcm in _hcms(doc):
        hcm.pop("forward_client_cert_details", None)
        hcm.pop("set_current_client_cert_details", None)


def no_route_filters(doc: Json) -> None:
    for hcm in _hcms(doc):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", [])
                               if f.get("name") not in (CORS_FILTER, FAULT_FILTER)]


def span_batches(doc: Json) -> None:
    """Envoy's Zipkin and OpenTelemetry tracers export every ``min_flush_spans`` spans
    (default 5): one POST / gRPC call per 5 spans. Raise it; flush at least every second."""
    layers = doc.setdefault("layered_runtime", {}).setdefault("layers", [])
    layers.insert(0, {"name": "bench-span-batches", "static_layer": {
        f"tracing.{tracer}.{key}": value
        for tracer in ("zipkin", "opentelemetry")
        for key, value in (("min_flush_spans", SPAN_BATCH), ("flush_interval_ms", 1000))}})


def log_batches(doc: Json) -> None:
    """The OpenTelemetry access logger flushes at ``buffer_size_bytes`` (default 16 KiB,
    ~25 entries) or every ``buffer_flush_interval``: make the size limit 1 MiB."""
    for hcm in _hcms(doc):
        for a in hcm.get("access_log", []):
            if a.get("name") == OTEL_LOGGER:
                a["typed_config"]["common_config"]["buffer_size_bytes"] = LOG_BATCH_BYTES


def _all(*edits: Callable[[Json], None]) -> Callable[[Json], None]:
    def edit(doc: Json) -> None:
        for e in edits:
            e(doc)
    return edit


# name -> (what it switches off, edit). "full" must stay first: the others are compared to it.
VARIANTS: dict[str, tuple[str, Callable[[Json], None]]] = {
    "full": ("nothing (shoal's config, static)", lambda doc: None),
    "-otlp-log": ("access-log stream to the CP (OTLP)", drop_logger(OTEL_LOGGER)),
    "-file-log": ("JSON access log on stdout", drop_logger(FILE_LOGGER)),
    "-stats": ("per-edge stats (stats access logger)", drop_logger(STATS_LOGGER)),
    "-tracing": ("tracer (at the control plane's --trace-sampling) and its span export",
                 no_tracing),
    "trace-1%": ("tracing sampled at 1 % instead of 100 %", sampling(1.0)),
    "trace-0%": ("(changes) tracing sampled at 0 % (spans still made, never sent)",
                 sampling(0.0)),
    "b3-only": ("(changes) B3 propagation only, no W3C traceparent", b3_only),
    "span-batch": (f"(changes) spans exported {SPAN_BATCH} per call, not 5", span_batches),
    "log-batch": ("(changes) access-log batches up to 1 MiB, not 16 KiB", log_batches),
    "batched": ("(changes) span-batch + log-batch", _all(span_batches, log_batches)),
    "-retry": ("route retry policy", no_retries),
    "-cors-fault": ("CORS and fault HTTP filters (outbound)", no_route_filters),
    "bare": ("access logs, per-edge stats, tracing, retries, CORS/fault filters, XFCC",
             _all(drop_logger(OTEL_LOGGER), drop_logger(FILE_LOGGER),
                  drop_logger(STATS_LOGGER), no_tracing, no_retries,
                  no_route_filters, no_xfcc)),
}


def _strip_type(msg: Json) -> Json:
    out = dict(msg)
    out.pop("@type", None)
    return out


def _dynamic(dump: Json) -> tuple[list[Json], dict[str, Json], list[Json], dict[str, Json]]:
    """(listeners, route configs by name, clusters, load assignments by cluster); the
    route configs also hold, under "scopes:<name>", the SRDS scopes of scoped routes."""
    listeners: list[Json] = []
    routes: dict[str, Json] = {}
    clusters: list[Json] = []
    eds: dict[str, Json] = {}
    for c in dump["configs"]:
        kind = c["@type"].rsplit(".", 1)[1]
        if kind == "ListenersConfigDump":
            listeners += [_strip_type(x["active_state"]["listener"])
                          for x in c.get("dynamic_listeners", [])]
        elif kind == "RoutesConfigDump":
            for r in c.get("dynamic_route_configs", []):
                routes[r["route_config"]["name"]] = _strip_type(r["route_config"])
        elif kind == "ScopedRoutesConfigDump":
            for sc in c.get("dynamic_scoped_route_configs", []):
                routes[f"scopes:{sc['name']}"] = {
                    "scopes": [_strip_type(x) for x in sc.get("scoped_route_configs", [])]}
        elif kind == "ClustersConfigDump":
            clusters += [_strip_type(x["cluster"]) for x in c.get("dynamic_active_clusters", [])]
        elif kind == "EndpointsConfigDump":
            for e in c.get("dynamic_endpoint_configs", []):
                cla = _strip_type(e["endpoint_config"])
                eds[cla["cluster_name"]] = cla
    return listeners, routes, clusters, eds


def static_bootstrap(bootstrap: Json, dump: Json, *, listener: str, listen_port: int,
                     admin_port: int, port_map: dict[int, int]) -> Json:
    """The sidecar's bootstrap with ``listener`` (renamed port) and all clusters static;
    endpoint ports in ``port_map`` are rewritten (to reach the other replica)."""
    listeners, routes, clusters, eds = _dynamic(dump)
    chosen = [copy.deepcopy(x) for x in listeners if x["name"] == listener]
    if not chosen:
        raise RuntimeError(f"listener {listener!r} not in the config dump")
    lst = chosen[0]
    lst["address"]["socket_address"]["port_value"] = listen_port
    for hcm in _hcms(lst):
        rds = hcm.pop("rds", None)
        if rds is not None:
            hcm["route_config"] = copy.deepcopy(routes[rds["route_config_name"]])
        scoped = hcm.get("scoped_routes")
        if scoped is not None:  # SRDS: the scopes inline, each with its routes inline
            scoped.pop("scoped_rds", None)
            scopes = copy.deepcopy(routes[f"scopes:{scoped['name']}"]["scopes"])
            for sc in scopes:
                sc["route_configuration"] = copy.deepcopy(
                    routes[sc.pop("route_configuration_name")])
            scoped["scoped_route_configurations_list"] = {"scoped_route_configurations": scopes}
    static_clusters = []
    for c in clusters:
        c = copy.deepcopy(c)
        if c.get("type") == "EDS":
            c.pop("eds_cluster_config", None)
            c["type"] = "STATIC"
            c["load_assignment"] = copy.deepcopy(eds.get(c["name"], {"cluster_name": c["name"]}))
            for locality in c["load_assignment"].get("endpoints", []):
                if not locality.get("load_balancing_weight"):  # dumped as 0: invalid in config
                    locality.pop("load_balancing_weight", None)
        for d in _walk(c.get("load_assignment", {})):
            sa = d.get("socket_address")
            if isinstance(sa, dict) and sa.get("port_value") in port_map:
                sa["port_value"] = port_map[sa["port_value"]]
        static_clusters.append(c)
    out = copy.deepcopy(bootstrap)
    out.pop("dynamic_resources", None)
    out["admin"] = {"address": {"socket_address": {"address": "127.0.0.1",
                                                   "port_value": admin_port}}}
    out.setdefault("static_resources", {})
    out["static_resources"]["listeners"] = [lst]
    out["static_resources"]["clusters"] = [*out["static_resources"].get("clusters", []),
                                           *static_clusters]
    return out


class Sidecar:
    """What a replica needs from a running sidecar."""

    def __init__(self, run_dir: Path, admin_port: int, inbound_port: int) -> None:
        self.bootstrap = json.loads((run_dir / "envoy-bootstrap.json").read_text())
        self.dump = config_dump(admin_port, include_eds=True)
        self.inbound_port = inbound_port


class ReplicaPair(StaticEnvoys):
    """Two static Envoys: the client sidecar's outbound listener and the server sidecar's
    inbound listener, with one :data:`VARIANTS` edit applied to both."""

    def __init__(self, workdir: Path, variant: str, client: Sidecar, server: Sidecar,
                 outbound_listener: str = "outbound_http") -> None:
        super().__init__()
        self.variant = variant
        edit = VARIANTS[variant][1]
        inbound = f"inbound|http|{server.inbound_port}"
        docs = {
            "client": static_bootstrap(client.bootstrap, client.dump, listener=outbound_listener,
                                       listen_port=self.port, admin_port=self.admin_ports[0],
                                       port_map={server.inbound_port: self.server_port}),
            "server": static_bootstrap(server.bootstrap, server.dump, listener=inbound,
                                       listen_port=self.server_port,
                                       admin_port=self.admin_ports[1], port_map={}),
        }
        for side, doc in docs.items():
            edit(doc)
            self.add(workdir / f"replica{variant}-{side}".replace("%", "pct"), doc)
