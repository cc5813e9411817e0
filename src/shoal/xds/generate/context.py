"""GenerationContext: what every proxy of one mesh snapshot shares, computed once.

Outbound clusters, load assignments, the routes of each service port, the
``outbound_http`` route configuration of each namespace and the route configuration of
each upstream port are built on first use and then the SAME message objects are handed
to every proxy (the xDS cache serializes each distinct object once). Messages given out
must never be mutated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource, ResourceKey
from shoal.api.traffic_policy import LocalityLbSetting
from shoal.multicluster.labels import CLUSTER_LABEL, NETWORK_LABEL
from shoal.registry import external
from shoal.registry.snapshot import Endpoint, MeshSnapshot, services_of_workloads
from shoal.xds.generate import (
    authn,
    clusters,
    egress,
    endpoints,
    ext_authz,
    jwt,
    listeners,
    locality,
    names,
    network,
    route_filters,
    routes,
    scope,
    security,
    tcp_routes,
    telemetry,
    tls,
    tls_routes,
    traffic_policy,
    vhosts,
)
from shoal.xds.types import Resources

# The part of a proxy's workload labels its routes depend on (see routes.route_labels).
Labels = tuple[tuple[str, str], ...]


# Kinds that no inbound listener or cluster depends on (routing is the caller's concern).
# A change of only these kinds lets a new context keep the previous one's inbound config;
# any other kind -- including kinds added later -- rebuilds it.
# HTTPRoutes only make VirtualServices (ADR 0035); EnvoyFilters patch copies after
# generation (ADR 0034), never the cached objects.
INBOUND_IGNORES = frozenset({"VirtualService", "DestinationRule", "ServiceLevelObjective",
                             "HTTPRoute", "GRPCRoute", "EnvoyFilter"})
# Kinds that no outbound cluster or endpoint depends on (a route picks among the clusters
# that services and DestinationRule subsets define; it creates none). A change of only
# these lets a new context keep the previous one's clusters, endpoints and their
# per-scope selections, with their content hashes.
OUTBOUND_IGNORES = frozenset({"VirtualService", "ServiceLevelObjective", "HTTPRoute",
                              "GRPCRoute", "EnvoyFilter"})
# Kinds that no host name of a service depends on: a change of only these keeps the
# previous context's outbound_http scopes as they are, without rebuilding them (thousands
# of small messages at a thousand services) to find them equal.
SCOPE_IGNORES = frozenset({"VirtualService", "DestinationRule", "Workload",
                           "ServiceLevelObjective", "HTTPRoute", "GRPCRoute", "EnvoyFilter",
                           "AuthorizationPolicy", "PeerAuthentication",
                           "RequestAuthentication"})
# cached properties and tables that hold the outbound clusters and endpoints (see above)
_OUTBOUND_CACHED = ("_outbound", "cluster_resources", "endpoint_resources")
_OUTBOUND_TABLES = ("_raw_endpoints", "_network_cla", "_networked", "_localized_cla",
                    "_localized", "_plaintext", "_scopes", "_scoped")


# outbound clusters, load assignments, and the locality settings of the clusters with one
_Outbound = tuple[dict[str, cluster_pb2.Cluster], dict[str, endpoint_pb2.ClusterLoadAssignment],
                  dict[str, LocalityLbSetting]]


class GenerationContext:
    """One per :class:`MeshSnapshot`; memoizes everything that does not depend on a proxy.

    ``previous`` and ``changed`` (the kinds that differ between the two snapshots) let the
    new context keep what the change cannot have touched: today each proxy's inbound
    listeners and clusters (:data:`INBOUND_IGNORES`), the largest per-proxy cost when a
    route changes.
    """

    def __init__(self, mesh: MeshSnapshot, previous: GenerationContext | None = None,
                 changed: frozenset[str] | None = None,
                 workloads: frozenset[tuple[str, str]] | None = None):
        """``workloads``: the (namespace, name) of the Workloads that changed, when the
        caller knows them: a workload's inbound config depends on that workload only, so
        the others' is kept."""
        self.mesh = mesh
        keep = (previous is not None and changed is not None and changed <= INBOUND_IGNORES
                and previous.mesh.config == mesh.config)
        keep_others = (previous is not None and changed is not None and workloads is not None
                       and changed <= INBOUND_IGNORES | {"Workload"}
                       and previous.mesh.config == mesh.config)
        # (namespace, workload, inbound port) -> (listener, cluster)
        self.inbound: dict[tuple[str, str, object], tuple[listener_pb2.Listener,
                                                          cluster_pb2.Cluster]] = {}
        if previous is not None and keep:
            self.inbound = previous.inbound
        elif previous is not None and keep_others and workloads is not None:
            self.inbound = {k: v for k, v in previous.inbound.items()
                            if (k[0], k[1]) not in workloads}
        self._routes: dict[tuple[str, str, int, Labels], list[rc_pb2.Route]] = {}
        self._outbound_rc: dict[tuple[str, Labels], route_pb2.RouteConfiguration] = {}
        self._upstream_rc: dict[tuple[str, str, int, Labels], route_pb2.RouteConfiguration] = {}
        self._listeners: dict[tuple[object, ...], listener_pb2.Listener] = {}
        self._inbound_clusters: dict[tuple[str, int, bool, str], cluster_pb2.Cluster] = {}
        self._digests: dict[int, tuple[Message, bytes]] = {}
        self._endpoint_mtls: dict[tuple[str, str, int], bool] = {}
        self._security: dict[tuple[object, ...], security.InboundSecurity] = {}
        self._plaintext: dict[int, tuple[Resources, Resources]] = {}
        self._scopes: dict[ResourceKey | None, scope.Scope] = {}
        self._scoped: dict[ResourceKey | None, tuple[Resources, Resources]] = {}
        self._localized_cla: dict[tuple[str, locality.ClientKey, int], tuple[
            endpoint_pb2.ClusterLoadAssignment, endpoint_pb2.ClusterLoadAssignment]] = {}
        self._localized: dict[tuple[int, locality.ClientKey], tuple[Resources, Resources]] = {}
        self._memo: dict[tuple[object, ...], Any] = {}  # see memo()
        self._raw_endpoints: dict[str, list[Endpoint]] = {}  # cluster -> endpoints (EDS)
        self._network_cla: dict[tuple[str, str, bool], endpoint_pb2.ClusterLoadAssignment] = {}
        self._networked: dict[tuple[int, str, bool], tuple[Resources, Resources]] = {}
        if keep and previous is not None and changed is not None \
                and changed <= OUTBOUND_IGNORES:
            self._inherit_outbound(previous)
        # proxy -> (shared clusters, its own, its CDS): see proxy_clusters
        self._proxy_cds: dict[str, tuple[Resources, Mapping[str, Message], Resources]] = {}
        self._keep_scopes = (previous is not None and changed is not None
                             and changed <= SCOPE_IGNORES
                             and previous.mesh.config == mesh.config)
        # Route configurations, scopes, outbound clusters and load assignments and their
        # shared sets equal in content to the previous context's are that context's
        # objects (the previous tables only, never the previous context itself: no chain
        # of old contexts stays alive). A change then leaves what it did not touch the
        # same objects, which makes the SotW change set and the packed forms free
        # (ADR 0036).
        self._before: dict[tuple[object, ...], Any] = (
            previous._reusable() if previous is not None else {})
        # Only Workloads changed: the outbound clusters and endpoints of the services
        # that select none of them (before or after) are the previous context's, as long
        # as no east-west gateway moved (they stand in for other networks' endpoints of
        # every service). See _outbound.
        self._workload_change: tuple[frozenset[tuple[str, str]], _Outbound,
                                     Mapping[str, list[Endpoint]]] | None = None
        if (previous is not None and changed == {"Workload"} and workloads is not None
                and "_outbound" in previous.__dict__ and previous.mesh.config == mesh.config
                and previous.east_west_gateways == self.east_west_gateways):
            touched = services_of_workloads((previous.mesh, mesh), workloads)
            self._workload_change = (
                frozenset((svc.metadata.namespace, svc.metadata.name) for _, svc in touched),
                previous._outbound, previous._raw_endpoints)
        # content hashes of the previous context's messages, for those carried over
        self._prev_digests = previous._digests if previous is not None else {}

    def _inherit_outbound(self, previous: GenerationContext) -> None:
        """Share the previous context's clusters and endpoints (OUTBOUND_IGNORES); their
        content hashes come along through ``digest`` (``_prev_digests``)."""
        for name in _OUTBOUND_CACHED:
            if name in previous.__dict__:
                self.__dict__[name] = previous.__dict__[name]
        for name in _OUTBOUND_TABLES:
            setattr(self, name, getattr(previous, name))

    def _reusable(self) -> dict[tuple[object, ...], Any]:
        """What the next context may reuse when equal in content: route configurations,
        scopes, outbound clusters and load assignments, and their shared sets."""
        out: dict[tuple[object, ...], Any] = {("rc", *k): v for k, v in self._upstream_rc.items()}
        out.update((k, v) for k, v in self._memo.items() if k[0] in ("scopes", "service_routes"))
        if "cluster_resources" in self.__dict__:
            out[("cluster_resources",)] = self.cluster_resources
            out.update((("cds", n), c) for n, c in self.cluster_resources.items.items())
        if "endpoint_resources" in self.__dict__:
            out[("endpoint_resources",)] = self.endpoint_resources
            out.update((("eds", n), e) for n, e in self.endpoint_resources.items.items())
        out.update((("proxy_cds", node), entry) for node, entry in self._proxy_cds.items())
        return out

    def proxy_clusters(self, node_id: str, shared: Resources,
                       own: Mapping[str, cluster_pb2.Cluster]) -> Resources:
        """CDS of one proxy: the shared clusters plus its own (inbound, gateway, rate
        limit). The previous context's object when neither part changed, so an unchanged
        proxy's thousands of clusters are not merged into a fresh dict on every change
        (memory, and the stream then sees the very mapping it sent)."""
        old = self._before.get(("proxy_cds", node_id))
        if old is not None:
            before_own = old[1]
            own = {n: _equal_or(before_own, n, c) for n, c in own.items()}
            if (old[0] is shared and before_own.keys() == own.keys()
                    and all(before_own[n] is c for n, c in own.items())):
                self._proxy_cds[node_id] = old
                return old[2]  # type: ignore[no-any-return]
        res = Resources.over(shared, own, self.version_of(own, base=shared.version))
        self._proxy_cds[node_id] = (shared, own, res)
        return res

    def _same(self, key: tuple[object, ...], msg: Message) -> Message:
        """``msg``, or the previous context's message under ``key`` if equal in content."""
        return _equal_or(self._before, key, msg)

    def _same_set(self, key: tuple[object, ...], items: dict[str, Message]) -> Resources:
        """A shared Resources of ``items``: the previous context's object if it holds the
        very same messages (its version then needs no hashing)."""
        old = self._before.get(key)
        if (isinstance(old, Resources) and old.items.keys() == items.keys()
                and all(old.items[n] is m for n, m in items.items())):
            return old
        return Resources(items=items, version=self.version_of(items))

    # -- shared by every proxy ------------------------------------------------------------

    @cached_property
    def _outbound(self) -> _Outbound:
        mesh = self.mesh
        cds: dict[str, cluster_pb2.Cluster] = {}
        eds: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
        by_locality: dict[str, LocalityLbSetting] = {}  # clusters with locality LB
        kept: set[str] = set()  # the previous context's, as they were (no comparison)
        fqdn = mesh.fqdn
        prev, self._workload_change = self._workload_change, None
        if prev is not None:
            touched, (p_cds, p_eds, p_locality), p_raw = prev
        for service in mesh.services:
            if prev is not None and (service.metadata.namespace,
                                     service.metadata.name) not in touched:
                for name, _, _ in clusters.outbound_cluster_names(mesh, service):
                    cds[name] = p_cds[name]
                    for have, had in ((eds, p_eds), (by_locality, p_locality),
                                      (self._raw_endpoints, p_raw)):
                        if name in had:
                            have[name] = had[name]  # type: ignore[index]
                    kept.add(name)
                continue
            dr = mesh.destination_rule_for(service)
            sans = authn.service_identities(mesh, service)
            for name, port_number, subset in clusters.outbound_cluster_names(mesh, service):
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
                    by_locality[name] = setting
                labels = dr.spec.subset(subset).labels if subset and dr is not None else None
                self._raw_endpoints[name] = mesh.endpoints(service, port, labels)
                eds[name] = self._network_assignment(name, mesh.config.network, False)
                if external.is_dns(service):  # ServiceEntry resolved by Envoy's DNS
                    cds[name] = egress.dns_cluster(cds[name], eds.pop(name))
                    by_locality.pop(name, None)  # Envoy resolves it: no locality groups
        same = self._same
        return ({n: c if n in kept else same(("cds", n), c) for n, c in sorted(cds.items())},
                {n: e if n in kept else same(("eds", n), e) for n, e in sorted(eds.items())},
                by_locality)

    def endpoint_mtls(self, ep: Endpoint) -> bool:
        """Does a client sidecar speak mesh mTLS to this endpoint? (memoized)"""
        key = (ep.namespace, ep.workload, ep.port)
        if key not in self._endpoint_mtls:
            self._endpoint_mtls[key] = authn.endpoint_mtls(self.mesh, ep)
        return self._endpoint_mtls[key]

    @property
    def clusters(self) -> Mapping[str, cluster_pb2.Cluster]:
        """Outbound clusters by name (every service port, every subset)."""
        return self._outbound[0]

    @property
    def load_assignments(self) -> Mapping[str, endpoint_pb2.ClusterLoadAssignment]:
        return self._outbound[1]

    @cached_property
    def cluster_resources(self) -> Resources:
        extra = {**jwt.jwks_clusters(self.mesh), **telemetry.clusters(self)}
        items = {**self.clusters, **{n: self._same(("cds", n), c) for n, c in extra.items()}}
        return self._same_set(("cluster_resources",), items)

    @cached_property
    def endpoint_resources(self) -> Resources:
        """EDS is the same for every proxy: one shared Resources object."""
        return self._same_set(("endpoint_resources",), dict(self.load_assignments))

    @cached_property
    def _services_by_workload(self) -> dict[tuple[str, str], list[Resource]]:
        """(namespace, workload) -> the services selecting it, in (namespace, name) order
        (an index, so that finding a proxy's inbound services is not a scan)."""
        out: dict[tuple[str, str], list[Resource]] = {}
        for service in self.mesh.services:
            # members, ready or not: a workload not ready yet already gets its inbound
            # config (it is only nobody's endpoint)
            members = {(wl.metadata.namespace, wl.metadata.name)
                       for wl in self.mesh.members(service)}
            for key in sorted(members):
                out.setdefault(key, []).append(service)
        return out

    def services_of_workload(self, namespace: str, workload: str) -> list[Resource]:
        return self._services_by_workload.get((namespace, workload), [])

    def routes(self, service: Resource, port: ServicePort, labels: Labels = ()
               ) -> list[rc_pb2.Route]:
        """Routes of one service port as seen by proxies whose workload has ``labels``
        (only the labels some VirtualService's sourceLabels mention: see route_labels)."""
        key = (service.metadata.namespace, service.metadata.name, port.port, labels)
        if key not in self._routes:
            self._routes[key] = routes.service_routes(self.mesh, service, port, dict(labels))
        return self._routes[key]

    def outbound_route_config(self, namespace: str, labels: Labels = (),
                              within: scope.Scope | None = None
                              ) -> route_pb2.RouteConfiguration:
        within = within or self.scope(None)
        key = (namespace, labels, within.key)
        if key not in self._outbound_rc:
            visible = None if within.key is None else (
                lambda svc: within.visible(self.mesh, svc))
            self._outbound_rc[key] = vhosts.outbound_route_config(
                self.mesh, namespace, lambda s, p: self.routes(s, p, labels), visible)
        return self._outbound_rc[key]

    def outbound_scopes(self, namespace: str, within: scope.Scope) -> Resources:
        """The SRDS scopes of ``outbound_http`` for proxies of ``namespace`` under
        ``within``, shared by all of them."""
        key = ("scopes", namespace, within.key)

        def build() -> Resources:
            old = self._before.get(key)
            if self._keep_scopes and isinstance(old, Resources):
                return old  # (SCOPE_IGNORES)
            visible = None if within.key is None else (
                lambda svc: within.visible(self.mesh, svc))
            items = vhosts.outbound_scopes(self.mesh, namespace, visible)
            if isinstance(old, Resources):
                items = {h: _equal_or(old.items, h, sc) for h, sc in items.items()}
            return self._same_set(key, items)
        return self.memo(key, build)

    def service_route_configs(self, labels: Labels, within: scope.Scope) -> Resources:
        """The route configuration of every HTTP service port ``within`` sees, for proxies
        whose workload has ``labels`` (the scopes' targets, and a captured connection's):
        one shared Resources per (labels, scope)."""
        key = ("service_routes", labels, within.key)

        def build() -> Resources:
            items: dict[str, Message] = {}
            for service in self.mesh.services:
                if within.visible(self.mesh, service):
                    for port in vhosts.http_ports(service):
                        rc = self.upstream_route_config(service, port, labels)
                        items[rc.name] = rc
            return self._same_set(key, items)
        return self.memo(key, build)

    # -- Sidecar scopes (one set of shared resources per Sidecar) ----------------------

    def scope(self, sidecar: Resource | None) -> scope.Scope:
        key = sidecar.key if sidecar is not None else None
        if key not in self._scopes:
            self._scopes[key] = scope.scope_of(self.mesh, sidecar)
        return self._scopes[key]

    @cached_property
    def source_label_keys(self) -> frozenset[str]:
        """Label keys any VirtualService's ``sourceLabels`` mention (once per snapshot)."""
        return routes.source_label_keys(self.mesh)

    def scope_of_proxy(self, namespace: str, workload: Resource | None) -> scope.Scope:
        return self.scope(scope.sidecar_for(self.mesh, namespace, workload))

    def scoped_resources(self, within: scope.Scope) -> tuple[Resources, Resources]:
        """(CDS, EDS) of the services ``within`` sees; the mesh-wide objects for the
        default scope. Computed once per scope, so its proxies share them."""
        if within.key not in self._scoped:
            cds, eds = self.cluster_resources, self.endpoint_resources
            if within.key is not None:
                names_ = {n for svc in self.mesh.services if within.visible(self.mesh, svc)
                          for n, _, _ in clusters.outbound_cluster_names(self.mesh, svc)}
                names_ |= ext_authz.provider_clusters(self.mesh)  # ADR 0033
                items = {k: v for k, v in cds.items.items()
                         if k in names_ or k not in self.clusters}
                cla = {k: v for k, v in eds.items.items() if k in names_}
                cds = Resources(items=items, version=self.version_of(items))
                eds = Resources(items=cla, version=self.version_of(cla))
            if within.allow_any:
                items = {**cds.items, egress.DFP_CLUSTER: self._passthrough}
                cds = Resources(items=items, version=self.version_of(items))
            self._scoped[within.key] = (cds, eds)
        return self._scoped[within.key]

    # -- networks (multi-cluster: other networks through their east-west gateways) ------

    @cached_property
    def east_west_gateways(self) -> network.Gateways:
        return network.east_west_gateways(self.mesh)

    def _network_assignment(self, name: str, net: str, east_west: bool
                            ) -> endpoint_pb2.ClusterLoadAssignment:
        key = (name, net, east_west)
        if key not in self._network_cla:
            eps = network.reachable(self._raw_endpoints[name], net, self.east_west_gateways,
                                    self.endpoint_mtls, east_west=east_west)
            self._network_cla[key] = endpoints.load_assignment(name, eps, self.endpoint_mtls)
        return self._network_cla[key]

    def network_endpoints(self, eds: Resources, workload: Resource | None) -> Resources:
        """``eds`` as a proxy of ``workload`` reaches it (see :mod:`network`): ``eds``
        itself for a proxy on this control plane's network that is not an east-west
        gateway (the shared objects); else rebuilt once per (EDS set, network, role)."""
        net = network.proxy_network(self.mesh, workload)
        east_west = workload is not None and network.gateway_port(self.mesh, workload) \
            is not None
        if net == self.mesh.config.network and not east_west:
            return eds
        key = (id(eds), net, east_west)
        cached = self._networked.get(key)
        if cached is None or cached[0] is not eds:
            self._outbound  # noqa: B018 -- fills _raw_endpoints
            items = {name: self._network_assignment(name, net, east_west)
                     if name in self._raw_endpoints else cla
                     for name, cla in eds.items.items()}
            cached = self._networked[key] = (eds, Resources(items=items,
                                                            version=self.version_of(items)))
        return cached[1]

    # -- locality load balancing (one EDS set per client locality) -----------------------

    def localized_endpoints(self, eds: Resources, client_locality: str,
                            client_labels: Mapping[str, str] | None = None) -> Resources:
        """``eds`` as a client in ``client_locality`` with workload labels
        ``client_labels`` (for failoverPriority) sees it: the load assignments of clusters
        with locality LB rewritten (see :mod:`locality`), the rest shared. ``eds`` itself
        when no cluster of it uses locality LB or the client has no locality nor labels.
        Memoized per (EDS set, locality, the labels failoverPriority looks at), so proxies
        of one locality share the objects."""
        settings = self._outbound[2]
        if not settings or (not client_locality and client_labels is None):
            return eds
        client = locality.client_key(client_locality, client_labels, self._priority_keys)
        key = (id(eds), client)
        cached = self._localized.get(key)
        if cached is None or cached[0] is not eds:
            items = {name: self._localized_assignment(name, cla, client)
                     if name in settings else cla for name, cla in eds.items.items()}
            same = all(items[n] is eds.items[n] for n in items)
            out = eds if same else Resources(items=items, version=self.version_of(items))
            cached = self._localized[key] = (eds, out)
        return cached[1]

    def _localized_assignment(self, name: str, cla: endpoint_pb2.ClusterLoadAssignment,
                              client: locality.ClientKey) -> endpoint_pb2.ClusterLoadAssignment:
        key = (name, client, id(cla))  # cla: one per network (see network_endpoints)
        cached = self._localized_cla.get(key)
        if cached is None or cached[0] is not cla:
            setting = self._outbound[2][name]
            labels = dict(client[1]) if client[1] is not None else None
            cached = self._localized_cla[key] = (cla, locality.localize(
                cla, client[0], setting, labels,
                self.memo(("locality.labels", name), lambda: self._endpoint_labels(name))
                if setting.failover_priority else None))
        return cached[1]

    @cached_property
    def _priority_keys(self) -> frozenset[str]:
        return locality.priority_keys(self._outbound[2].values())

    def _endpoint_labels(self, name: str) -> dict[tuple[str, int], dict[str, str]]:
        """(address, port) -> labels of the endpoints of cluster ``name``, and of the
        east-west gateways standing for other networks' endpoints (failoverPriority)."""
        out = locality.endpoint_labels(self._raw_endpoints.get(name, ()))
        for gws in self.east_west_gateways.values():
            for gw in gws:
                out.setdefault((gw.address, gw.port), {CLUSTER_LABEL: gw.cluster,
                                                       NETWORK_LABEL: gw.network})
        return out

    def without_mtls(self, cds: Resources) -> Resources:
        """``cds`` for a proxy that has no identity: no mesh mTLS toward anyone (it has no
        certificate to present, and waiting for one would stall cluster warming).
        Computed once per cluster set, so such proxies share it."""
        key = id(cds)
        cached = self._plaintext.get(key)
        if cached is None or cached[0] is not cds:
            items = {}
            for name, c in cds.items.items():
                if c.transport_socket_matches:
                    c = _strip_mtls(c)
                items[name] = c
            cached = self._plaintext[key] = (cds, Resources(items=items,
                                                            version=self.version_of(items)))
        return cached[1]

    @cached_property
    def _passthrough(self) -> cluster_pb2.Cluster:
        return egress.passthrough_cluster()

    def upstream_route_config(
        self, service: Resource, port: ServicePort, labels: Labels = ()
    ) -> route_pb2.RouteConfiguration:
        key = (service.metadata.namespace, service.metadata.name, port.port, labels)
        if key not in self._upstream_rc:
            self._upstream_rc[key] = self._same(("rc", *key), vhosts.upstream_route_config(
                self.mesh, service, port, lambda s, p: self.routes(s, p, labels)))
        return self._upstream_rc[key]

    # -- per proxy, but often equal across proxies (memoized by their arguments) --------

    def outbound_listener(self, port: int, allow_any: bool = False) -> listener_pb2.Listener:
        key = ("outbound", port, allow_any)
        if key not in self._listeners:
            extras = route_filters.TRAFFIC_EXTRAS + telemetry.http_extras(
                self, telemetry.Direction.OUTBOUND)
            if allow_any:  # unknown hosts go to the dynamic forward proxy
                extras = egress.forward_proxy_extras() + extras
            self._listeners[key] = listeners.outbound_http_listener(port, extras,
                                                                   scoped=not allow_any)
        return self._listeners[key]

    def upstream_listener(
        self, host: str, service: Resource, port: ServicePort, local_port: int,
        labels: Labels = (),
    ) -> listener_pb2.Listener:
        fqdn = self.mesh.fqdn(service)
        key = ("upstream", host, fqdn, port.port, local_port,
               () if port.protocol.is_http else labels)
        if key not in self._listeners:
            if port.protocol.is_http:
                rds = names.upstream_route(fqdn, port.port)
                extras = route_filters.TRAFFIC_EXTRAS + telemetry.http_extras(
                    self, telemetry.Direction.OUTBOUND)
                lis = listeners.upstream_http_listener(host, port.port, local_port, rds, extras)
            elif port.protocol.is_tls:  # VirtualService tls routes by SNI, then tcp
                log = telemetry.tcp_access_log(self, telemetry.Direction.OUTBOUND)
                chains = tls_routes.sidecar_tls_chains(
                    self.mesh, service, port, dict(labels),
                    names.upstream_stat_prefix(host, port.port), log)
                lis = listeners.upstream_tls_listener(host, port.port, local_port, chains)
            else:
                # VirtualService tcp routes (weighted) for this service port
                weighted = tcp_routes.tcp_destinations(self.mesh, service, port, dict(labels))
                log = telemetry.tcp_access_log(self, telemetry.Direction.OUTBOUND)
                lis = listeners.upstream_tcp_listener(host, port.port, local_port, weighted,
                                                      log)
            self._listeners[key] = lis
        return self._listeners[key]

    def inbound_cluster(self, name: str, app_port: int, http2: bool, app_socket: str = ""
                        ) -> cluster_pb2.Cluster:
        key = (name, app_port, http2, app_socket)
        if key not in self._inbound_clusters:
            self._inbound_clusters[key] = clusters.inbound_cluster(name, app_port, http2,
                                                                   app_socket)
        return self._inbound_clusters[key]

    def inbound_security(self, workload: Resource, port: int, is_http: bool
                         ) -> security.InboundSecurity:
        """mTLS mode, authn and authz filters of one inbound port; equal policies give the
        same (shared) object."""
        key = security.security_key(self.mesh, workload, port, is_http)
        if key not in self._security:
            self._security[key] = security.inbound_security(self.mesh, workload, port, is_http)
        return self._security[key]

    # -- versions -------------------------------------------------------------------------

    def digest(self, msg: Message) -> bytes:
        """Content hash of one message, computed once per message object."""
        entry = self._digests.get(id(msg))
        if entry is None or entry[0] is not msg:
            entry = self._prev_digests.get(id(msg))
            if entry is None or entry[0] is not msg:
                entry = (msg, hashlib.sha256(msg.SerializeToString(deterministic=True)).digest())
            self._digests[id(msg)] = entry
        return entry[1]

    def patch_value(self, envoy_filter: Resource, index: int) -> Message | None:
        """An EnvoyFilter patch's value as its Envoy message, parsed once per context
        (None for REMOVE); shared: callers copy it."""
        cp = envoy_filter.spec.config_patches[index]
        if cp.patch.value is None:
            return None
        return self.memo(("envoyfilter", envoy_filter.key, envoy_filter.revision, index),
                         lambda: cp.value)

    def memo(self, key: tuple[object, ...], build: Callable[[], Any]) -> Any:
        """``build()``, once per ``key`` for this snapshot: for generator modules that
        keep no state of their own (e.g. capture.py); ``key`` starts with the module's name."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def version_of(self, items: Mapping[str, Message], base: str = "") -> str:
        """A content version of ``items`` (plus ``base``, the version of a shared part)."""
        h = hashlib.sha256(base.encode())
        for name in sorted(items):
            h.update(name.encode() + b"\0" + self.digest(items[name]))
        return h.hexdigest()[:16]


def _equal_or(before: Mapping[Any, Any], key: object, msg: Message) -> Message:
    """The message ``before`` holds under ``key`` if it equals ``msg`` in content, else
    ``msg`` (keeps unchanged content the same object from one context to the next)."""
    old = before.get(key)
    return old if old is not None and old == msg else msg  # type: ignore[no-any-return]


def _strip_mtls(cluster: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    out.ClearField("transport_socket_matches")
    return out
