"""TLS routed by SNI without terminating it: VirtualService ``tls`` rules as data, and the
filter chains that carry them (a sidecar's TLS service port, a gateway's TLS server).

    routes = sidecar_sni_routes(mesh, service, port, labels)     # data
    chains = sni_filter_chains(routes, fallback, stat_prefix)     # Envoy filter chains

Every chain is one ``tcp_proxy`` (weighted when a rule has several destinations). Rules
are first-match, like Istio's: an SNI name goes to the first rule (and match) naming it,
and a name an earlier pattern already covers (``*``, ``*.example.com``) is left out, so
no two chains share a name (Envoy rejects duplicate filter chain matches) and Envoy's
"most specific name wins" selection cannot reorder the rules. ``*`` is the catch-all:
the chain without server names. The functions are pure; :func:`sni_filter_chains` only
builds ``FilterChain`` messages, so other listeners (e.g. transparent capture) can add
their own ``filter_chain_match`` fields to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.api.networking import TLSMatchAttributes
from shoal.api.selector import selects
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate.routes import Labels
from shoal.xds.generate.tcp_routes import (
    Weighted,
    resolve,
    tcp_destinations,
    tcp_proxy_filter,
)

ANY_SNI = "*"


@dataclass(frozen=True)
class SniRoute:
    """Connections whose SNI is one of ``server_names`` (``()``: any SNI) go to
    ``clusters``."""

    server_names: tuple[str, ...]
    clusters: Weighted


def covers(pattern: str, name: str) -> bool:
    """Does SNI ``pattern`` (``*``, ``*.suffix`` or a name) match every name ``name``
    matches? (``name`` may itself be a ``*.suffix`` pattern.)"""
    if pattern in (ANY_SNI, name):
        return True
    return pattern.startswith("*.") and name.endswith(pattern[1:])


def first_claims(candidates: Iterable[tuple[Sequence[str], Weighted]]) -> list[SniRoute]:
    """``(sni names, clusters)`` in rule order -> routes where each name is claimed once,
    by the first candidate naming or covering it. A candidate left without names is
    dropped; everything after a ``*`` is unreachable."""
    claimed: list[str] = []
    out: list[SniRoute] = []
    for sni_names, clusters in candidates:
        if ANY_SNI in sni_names:
            if not any(p == ANY_SNI for p in claimed):
                out.append(SniRoute((), clusters))
                claimed.append(ANY_SNI)
            continue
        mine = tuple(dict.fromkeys(
            n for n in sni_names if not any(covers(p, n) for p in claimed)))
        if mine:
            claimed.extend(mine)
            out.append(SniRoute(mine, clusters))
    return out


def _applies_to_sidecar(m: TLSMatchAttributes, port: int, labels: Labels) -> bool:
    return (m.port is None or m.port == port) and (not m.gateways or "mesh" in m.gateways) \
        and selects(m.source_labels, labels)


def sidecar_sni_routes(mesh: MeshSnapshot, service: Resource, port: ServicePort,
                       labels: Labels | None = None) -> list[SniRoute]:
    """SNI routes of (service, port) for a sidecar whose workload has ``labels``: the
    ``tls`` rules of the service's first VirtualService (the one its HTTP and TCP routes
    come from too)."""
    labels = labels or {}
    vss = mesh.virtual_services_for(service)
    if not vss:
        return []
    vs = vss[0]

    def candidates() -> Iterable[tuple[Sequence[str], Weighted]]:
        for rule in vs.spec.tls:
            found = resolve(mesh, rule.route, vs.metadata.namespace, port.port)
            if found is None:
                continue
            for m in rule.match:
                if _applies_to_sidecar(m, port.port, labels):
                    yield m.sni_hosts, found

    return first_claims(candidates())


def sni_filter_chains(routes: Sequence[SniRoute], fallback: Weighted | None,
                      stat_prefix: str,
                      access_log: Sequence[accesslog_pb2.AccessLog] = ()
                      ) -> list[lc_pb2.FilterChain]:
    """One chain per route (``server_names`` match), then the catch-all: a ``*`` route,
    else ``fallback`` (None: connections with another SNI, or none, are closed). The
    listener needs a TLS inspector when any chain matches on server names."""
    chains = []
    catch_all = fallback
    for r in routes:
        if not r.server_names:
            catch_all = r.clusters
            continue
        chains.append(lc_pb2.FilterChain(
            filter_chain_match=lc_pb2.FilterChainMatch(server_names=list(r.server_names)),
            filters=[tcp_proxy_filter(stat_prefix, r.clusters, access_log)]))
    if catch_all is not None:
        chains.append(lc_pb2.FilterChain(
            filters=[tcp_proxy_filter(stat_prefix, catch_all, access_log)]))
    return chains


def sidecar_tls_chains(mesh: MeshSnapshot, service: Resource, port: ServicePort,
                       labels: Labels | None, stat_prefix: str,
                       access_log: Sequence[accesslog_pb2.AccessLog] = ()
                       ) -> list[lc_pb2.FilterChain]:
    """Filter chains of a TLS service port as a sidecar sees it: SNI routes, then the
    port's TCP destination (``tcp`` rules, else the service's own cluster)."""
    return sni_filter_chains(
        sidecar_sni_routes(mesh, service, port, labels),
        tcp_destinations(mesh, service, port, labels), stat_prefix, access_log)


def needs_inspector(chains: Sequence[lc_pb2.FilterChain]) -> bool:
    return any(c.filter_chain_match.server_names for c in chains)
