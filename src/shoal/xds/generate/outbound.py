"""Outbound clusters and endpoints (CDS and EDS), one table per mesh snapshot.

:class:`OutboundTable` holds the cluster and load assignment of every service port and
subset, built once and shared by every proxy, and the variants a proxy may need, each
built once and shared by the proxies that need it: what its Sidecar scope sees, the
endpoints as seen from another network (through east-west gateways) or from a locality,
the clusters without mesh mTLS for a proxy that has no identity.

The table is taken over by the next snapshot when a change touches none of
:data:`INPUTS`; a Workload change rebuilds only the clusters of the services selecting the
changed workloads (before or after the change) and takes the others over as they are.
The generator :data:`GENERATOR` hands each proxy its variant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.message import Message

from shoal.api.meta import Resource, ResourceKey
from shoal.api.traffic_policy import LocalityLbSetting
from shoal.multicluster.labels import CLUSTER_LABEL, NETWORK_LABEL
from shoal.registry import external
from shoal.registry.gateways import GATEWAY_KINDS
from shoal.registry.snapshot import Endpoint, mtls_disabled
from shoal.security import authn, ext_authz, jwt
from shoal.xds.generate import (
    clusters,
    egress,
    endpoints,
    locality,
    names,
    network,
    telemetry,
    tls,
    traffic_policy,
)
from shoal.xds.generate.base import Generator, Part, ProxyView
from shoal.xds.types import Resources

if TYPE_CHECKING:
    from shoal.xds.generate.context import Change, GenerationContext
    from shoal.xds.generate.scope import Scope

# Kinds the outbound clusters and endpoints depend on (a Gateway API Gateway wherever
# Istio's Gateway: it becomes Istio Gateways, registry/gateways.py). Routing (VirtualService, the
# Gateway API routes and their grants) picks among the clusters that services and
# DestinationRule subsets define and creates none; EnvoyFilters patch copies.
INPUTS = frozenset({"Service", "ServiceEntry", "Workload", "DestinationRule", "Gateway",
                    "Sidecar", "PeerAuthentication", "RequestAuthentication",
                    "AuthorizationPolicy", "RateLimitPolicy", "TokenRevocation"}) | GATEWAY_KINDS

_Variant = tuple[Resources, Resources]  # (the set it was made from, the variant)


class OutboundTable:
    """Every outbound cluster and load assignment of one mesh snapshot (see the module
    doc). Built through :func:`table`; messages given out are never mutated."""

    def __init__(self, ctx: GenerationContext, previous: OutboundTable | None = None,
                 touched: frozenset[tuple[str, str]] = frozenset(),
                 east_west: network.Gateways | None = None):
        """``previous``/``touched``: take over the previous table's clusters of every
        service not in ``touched`` (namespace, name) instead of building them;
        ``east_west``: the mesh's east-west gateways, if the caller has them already."""
        self.east_west: network.Gateways = (
            east_west if east_west is not None else network.east_west_gateways(ctx.mesh))
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        # (namespace, name) of each service -> its outbound cluster names
        self.cluster_names: dict[tuple[str, str], tuple[str, ...]] = {}
        self.load_assignments: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
        # clusters with locality load balancing, and their setting
        self.locality: dict[str, LocalityLbSetting] = {}
        # cluster -> its endpoints as the registry has them (EDS, before any variant)
        self.endpoints: dict[str, list[Endpoint]] = {}
        self._network_cla: dict[tuple[str, str, bool], endpoint_pb2.ClusterLoadAssignment] = {}
        self._networked: dict[tuple[int, str, bool], _Variant] = {}
        self._localized_cla: dict[tuple[str, locality.ClientKey, int], tuple[
            endpoint_pb2.ClusterLoadAssignment, endpoint_pb2.ClusterLoadAssignment]] = {}
        self._localized: dict[tuple[int, locality.ClientKey], _Variant] = {}
        self._plaintext: dict[int, _Variant] = {}
        self._scoped: dict[ResourceKey | None, tuple[Resources, Resources]] = {}
        self._build(ctx, previous, touched)
        self.priority_keys = locality.priority_keys(self.locality.values())
        extra = {**jwt.jwks_clusters(ctx.mesh), **telemetry.clusters(ctx)}
        items = {**self.clusters, **{n: ctx.same(("cds", n), c) for n, c in extra.items()}}
        self.cluster_resources = ctx.same_set(("cluster_resources",), items)
        # EDS is the same for every proxy of the default scope: one shared object
        self.endpoint_resources = ctx.same_set(("endpoint_resources",),
                                               dict(self.load_assignments))

    @classmethod
    def after_workloads(cls, ctx: GenerationContext, previous: OutboundTable,
                        change: Change) -> OutboundTable:
        """The table after only ``workloads`` changed: the services selecting none of them
        (before or after) keep the previous table's clusters and endpoints, as long as
        no east-west gateway moved (they stand in for every service's endpoints on other
        networks)."""
        east_west = network.east_west_gateways(ctx.mesh)
        if east_west != previous.east_west:
            return cls(ctx, east_west=east_west)
        return cls(ctx, previous, change.services, east_west)

    def _build(self, ctx: GenerationContext, previous: OutboundTable | None,
               touched: frozenset[tuple[str, str]]) -> None:
        mesh = ctx.mesh
        cds: dict[str, cluster_pb2.Cluster] = {}
        eds: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
        kept: set[str] = set()  # the previous table's, as they were (no comparison)
        fqdn = mesh.fqdn
        for service in mesh.services:
            key = (service.metadata.namespace, service.metadata.name)
            if previous is not None and key not in touched:
                # its Service and DestinationRule did not change (only workloads did):
                # the same cluster names, not worked out again
                self.cluster_names[key] = names_ = previous.cluster_names[key]
                for name in names_:
                    cds[name] = previous.clusters[name]
                    for have, had in ((eds, previous.load_assignments),
                                      (self.locality, previous.locality),
                                      (self.endpoints, previous.endpoints)):
                        if name in had:
                            have[name] = had[name]  # type: ignore[index]
                    kept.add(name)
                continue
            dr = mesh.destination_rule_for(service)
            sans = authn.service_identities(mesh, service)
            made = list(clusters.outbound_cluster_names(mesh, service))
            self.cluster_names[key] = tuple(name for name, _, _ in made)
            for name, port_number, subset in made:
                port = service.spec.port(port_number)
                matches = tls.transport_socket_matches(
                    names.sni(port.port, subset, fqdn(service)), sans,
                    authn.upstream_alpn(port.protocol),
                ) if sans else ()
                policy = traffic_policy.policy_for(dr, subset, port.port)
                cds[name] = traffic_policy.apply_traffic_policy(
                    clusters.outbound_cluster(name, port.protocol.is_http2, matches),
                    policy, port.port, fqdn(service), authn.upstream_alpn(port.protocol))
                if (setting := locality.setting_of(policy)) is not None:
                    cds[name] = locality.apply(cds[name], setting)
                    self.locality[name] = setting
                labels = dr.spec.subset(subset).labels if subset and dr is not None else None
                self.endpoints[name] = mesh.endpoints(service, port, labels)
                eds[name] = self._network_assignment(ctx, name, mesh.config.network, False)
                if external.is_dns(service):  # ServiceEntry resolved by Envoy's DNS
                    cds[name] = egress.dns_cluster(cds[name], eds.pop(name))
                    self.locality.pop(name, None)  # Envoy resolves it: no locality groups
        same = ctx.same
        self.clusters = {n: c if n in kept else same(("cds", n), c)
                         for n, c in sorted(cds.items())}
        self.load_assignments = {n: e if n in kept else same(("eds", n), e)
                                 for n, e in sorted(eds.items())}

    def reusable(self) -> Iterator[tuple[tuple[object, ...], Any]]:
        """What the next snapshot's table may reuse when equal in content."""
        yield ("cluster_resources",), self.cluster_resources
        yield from ((("cds", n), c) for n, c in self.cluster_resources.items.items())
        yield ("endpoint_resources",), self.endpoint_resources
        yield from ((("eds", n), e) for n, e in self.endpoint_resources.items.items())

    # -- Sidecar scopes ---------------------------------------------------------------

    def scoped(self, ctx: GenerationContext, within: Scope) -> tuple[Resources, Resources]:
        """(CDS, EDS) of the services ``within`` sees; the mesh-wide objects for the
        default scope. Computed once per scope, so its proxies share them."""
        if within.key not in self._scoped:
            cds, eds = self.cluster_resources, self.endpoint_resources
            mesh = ctx.mesh
            if within.key is not None:
                names_ = {n for svc in mesh.services if within.visible(mesh, svc)
                          for n, _, _ in clusters.outbound_cluster_names(mesh, svc)}
                names_ |= ext_authz.provider_clusters(mesh)  # ADR 0033
                items = {k: v for k, v in cds.items.items()
                         if k in names_ or k not in self.clusters}
                cla = {k: v for k, v in eds.items.items() if k in names_}
                cds = Resources(items=items, version=ctx.version_of(items))
                eds = Resources(items=cla, version=ctx.version_of(cla))
            if within.allow_any:
                items = {**cds.items, egress.DFP_CLUSTER: ctx.memo(
                    ("outbound", "passthrough"), egress.passthrough_cluster)}
                cds = Resources(items=items, version=ctx.version_of(items))
            self._scoped[within.key] = (cds, eds)
        return self._scoped[within.key]

    # -- networks (multi-cluster: other networks through their east-west gateways) ------

    def _network_assignment(self, ctx: GenerationContext, name: str, net: str,
                            east_west: bool) -> endpoint_pb2.ClusterLoadAssignment:
        key = (name, net, east_west)
        if key not in self._network_cla:
            eps = network.reachable(self.endpoints[name], net, self.east_west,
                                    ctx.endpoint_mtls, east_west=east_west)
            self._network_cla[key] = endpoints.load_assignment(name, eps, ctx.endpoint_mtls)
        return self._network_cla[key]

    def network_endpoints(self, ctx: GenerationContext, eds: Resources,
                          workload: Resource | None) -> Resources:
        """``eds`` as a proxy of ``workload`` reaches it (see :mod:`network`): ``eds``
        itself for a proxy on this control plane's network that is not an east-west
        gateway (the shared objects); else rebuilt once per (EDS set, network, role)."""
        mesh = ctx.mesh
        net = network.proxy_network(mesh, workload)
        east_west = workload is not None and network.gateway_port(mesh, workload) is not None
        if net == mesh.config.network and not east_west:
            return eds
        key = (id(eds), net, east_west)
        cached = self._networked.get(key)
        if cached is None or cached[0] is not eds:
            items = {name: self._network_assignment(ctx, name, net, east_west)
                     if name in self.endpoints else cla
                     for name, cla in eds.items.items()}
            cached = self._networked[key] = (eds, Resources(items=items,
                                                            version=ctx.version_of(items)))
        return cached[1]

    # -- locality load balancing (one EDS set per client locality) -----------------------

    def localized_endpoints(self, ctx: GenerationContext, eds: Resources,
                            client_locality: str,
                            client_labels: Mapping[str, str] | None = None) -> Resources:
        """``eds`` as a client in ``client_locality`` with workload labels
        ``client_labels`` (for failoverPriority) sees it: the load assignments of clusters
        with locality LB rewritten (see :mod:`locality`), the rest shared. ``eds`` itself
        when no cluster of it uses locality LB or the client has no locality nor labels.
        Memoized per (EDS set, locality, the labels failoverPriority looks at), so proxies
        of one locality share the objects."""
        if not self.locality or (not client_locality and client_labels is None):
            return eds
        client = locality.client_key(client_locality, client_labels, self.priority_keys)
        key = (id(eds), client)
        cached = self._localized.get(key)
        if cached is None or cached[0] is not eds:
            items = {name: self._localized_assignment(ctx, name, cla, client)
                     if name in self.locality else cla for name, cla in eds.items.items()}
            same = all(items[n] is eds.items[n] for n in items)
            out = eds if same else Resources(items=items, version=ctx.version_of(items))
            cached = self._localized[key] = (eds, out)
        return cached[1]

    def _localized_assignment(self, ctx: GenerationContext, name: str,
                              cla: endpoint_pb2.ClusterLoadAssignment,
                              client: locality.ClientKey) -> endpoint_pb2.ClusterLoadAssignment:
        key = (name, client, id(cla))  # cla: one per network (see network_endpoints)
        cached = self._localized_cla.get(key)
        if cached is None or cached[0] is not cla:
            setting = self.locality[name]
            labels = dict(client[1]) if client[1] is not None else None
            cached = self._localized_cla[key] = (cla, locality.localize(
                cla, client[0], setting, labels,
                ctx.memo(("locality.labels", name), lambda: self._endpoint_labels(name))
                if setting.failover_priority else None))
        return cached[1]

    def _endpoint_labels(self, name: str) -> dict[tuple[str, int], dict[str, str]]:
        """(address, port) -> labels of the endpoints of cluster ``name``, and of the
        east-west gateways standing for other networks' endpoints (failoverPriority)."""
        out = locality.endpoint_labels(self.endpoints.get(name, ()))
        for gws in self.east_west.values():
            for gw in gws:
                out.setdefault((gw.address, gw.port), {CLUSTER_LABEL: gw.cluster,
                                                       NETWORK_LABEL: gw.network})
        return out

    def without_mtls(self, ctx: GenerationContext, cds: Resources) -> Resources:
        """``cds`` for a proxy that has no identity: no mesh mTLS toward anyone (it has no
        certificate to present, and waiting for one would stall cluster warming).
        Computed once per cluster set, so such proxies share it."""
        key = id(cds)
        cached = self._plaintext.get(key)
        if cached is None or cached[0] is not cds:
            items: dict[str, Message] = {}
            for name, c in cds.items.items():
                items[name] = _strip_mtls(c) if c.transport_socket_matches else c
            cached = self._plaintext[key] = (cds, Resources(items=items,
                                                            version=ctx.version_of(items)))
        return cached[1]


def table(ctx: GenerationContext) -> OutboundTable:
    """The outbound table of ``ctx``'s snapshot (the previous one's when unchanged)."""
    return ctx.table("outbound", INPUTS, OutboundTable, OutboundTable.after_workloads)


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    """The shared clusters and endpoints as this proxy sees them."""
    t = table(ctx)
    cds, eds = t.scoped(ctx, view.within)
    workload = view.workload
    eds = t.network_endpoints(ctx, eds, workload)
    eds = t.localized_endpoints(ctx, eds,
                                workload.spec.locality if workload is not None else "",
                                workload.spec.labels if workload is not None else None)
    if workload is not None and mtls_disabled(workload):
        cds = t.without_mtls(ctx, cds)
    yield Part(clusters_shared=cds, endpoints=eds)


GENERATOR = Generator("outbound", INPUTS, _parts)


def _strip_mtls(cluster: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    out.ClearField("transport_socket_matches")
    return out
