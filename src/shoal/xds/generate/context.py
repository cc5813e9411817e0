"""GenerationContext: what every proxy of one mesh snapshot shares, computed once.

The generators (:mod:`shoal.xds.generate.base`) build their messages through it: the
routes of each service port, the route configuration of each service port, the inbound
clusters and security of each policy, and the generators' own tables
(:meth:`GenerationContext.table`: outbound clusters and endpoints, scopes, inbound
listeners) are built on first use and then the SAME message objects are handed to every
proxy (the xDS cache serializes each distinct object once). Messages given out must
never be mutated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource, ResourceKey
from shoal.registry.snapshot import Endpoint, MeshSnapshot, services_of_workloads
from shoal.security import authn
from shoal.security import plugin as security
from shoal.xds.generate import clusters, routes, scope, vhosts
from shoal.xds.generate.base import Labels
from shoal.xds.types import Resources

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """What differs from the previous snapshot's context (when the mesh config did not
    change): the kinds changed; when the caller knows them, the Workloads changed and the
    services selecting one of them before or after; and the previous context's tables
    not taken yet (never the previous context itself: no chain of old contexts stays
    alive, and a table is let go once this context has decided on its own)."""

    kinds: frozenset[str]
    workloads: frozenset[tuple[str, str]] | None
    services: frozenset[tuple[str, str]]
    tables: dict[str, Any]


class GenerationContext:
    """One per :class:`MeshSnapshot`; memoizes everything that does not depend on a proxy.

    ``previous`` and ``changed`` (the kinds that differ between the two snapshots) let a
    generator's tables be taken over from the previous context when the change touches
    none of its inputs (:meth:`table`), and ``workloads`` (the (namespace, name) of the
    Workloads that changed, when the caller knows them) lets a table that depends on
    workloads take over what belongs to the others.
    """

    def __init__(self, mesh: MeshSnapshot, previous: GenerationContext | None = None,
                 changed: frozenset[str] | None = None,
                 workloads: frozenset[tuple[str, str]] | None = None):
        self.mesh = mesh
        self._change: Change | None = None
        if previous is not None and changed is not None \
                and previous.mesh.config == mesh.config:
            services = frozenset(
                (svc.metadata.namespace, svc.metadata.name)
                for _, svc in services_of_workloads((previous.mesh, mesh), workloads)
            ) if workloads else frozenset()
            self._change = Change(changed, workloads, services, dict(previous._tables))
        self._tables: dict[str, Any] = {}
        # (service port, labels) -> (the VirtualServices naming the service, its routes)
        self._routes: dict[tuple[str, str, int, Labels],
                           tuple[tuple[Resource, ...], list[rc_pb2.Route]]] = {}
        self._upstream_rc: dict[tuple[str, str, int, Labels], route_pb2.RouteConfiguration] = {}
        self._inbound_clusters: dict[tuple[str, int, bool, str], cluster_pb2.Cluster] = {}
        self._digests: dict[int, tuple[Message, bytes]] = {}
        self._endpoint_mtls: dict[tuple[str, str, int], bool] = {}
        self._security: dict[tuple[object, ...], security.InboundSecurity] = {}
        self._scopes: dict[ResourceKey | None, scope.Scope] = {}
        self._memo: dict[tuple[object, ...], Any] = {}  # see memo()
        # proxy (Proxy.config_key) -> (shared clusters, its own, its CDS): see proxy_clusters
        self._proxy_cds: dict[tuple[object, ...],
                              tuple[Resources, Mapping[str, Message], Resources]] = {}
        # Route configurations, scopes, outbound clusters and load assignments and their
        # shared sets equal in content to the previous context's are that context's
        # objects. A change then leaves what it did not touch the same objects, which
        # makes the SotW change set and the packed forms free (ADR 0036).
        self._before: dict[tuple[object, ...], Any] = (
            previous._reusable() if previous is not None else {})
        # content hashes of the previous context's messages, for those carried over
        self._prev_digests = previous._digests if previous is not None else {}
        # no input of the routes changed but those reaching them through their key
        # (routes.KEYED_INPUTS): a service's routes (and route configuration) are the
        # previous ones unless the VirtualServices naming it changed (see routes())
        self._routes_kept = self._change is not None and not (
            (self._change.kinds & routes.INPUTS) - routes.KEYED_INPUTS)

    def table(self, name: str, inputs: frozenset[str], build: Callable[[GenerationContext], T],
              after_workloads: Callable[[GenerationContext, T, Change], T] | None = None
              ) -> T:
        """A generator's table ``name`` for this snapshot, built on first use: the
        previous context's when the change touched none of ``inputs``;
        ``after_workloads(self, previous, change)`` when the only input it touched is
        Workloads the change names; else ``build(self)``."""
        if name in self._tables:
            return self._tables[name]  # type: ignore[no-any-return]
        change = self._change
        previous = change.tables.pop(name, None) if change is not None else None
        if change is None or previous is None:
            made = build(self)
        elif change.kinds.isdisjoint(inputs):
            made = previous
        elif (after_workloads is not None and change.workloads is not None
              and change.kinds & inputs == {"Workload"}):
            made = after_workloads(self, previous, change)
        else:
            made = build(self)
        self._tables[name] = made
        return made

    def _reusable(self) -> dict[tuple[object, ...], Any]:
        """What the next context may reuse when equal in content: route configurations,
        scopes, outbound clusters and load assignments, and their shared sets."""
        out: dict[tuple[object, ...], Any] = {("rc", *k): v for k, v in self._upstream_rc.items()}
        out.update((("routes", *k), v) for k, v in self._routes.items())
        out.update((k, v) for k, v in self._memo.items() if k[0] == "service_routes")
        for table in self._tables.values():
            if hasattr(table, "reusable"):
                out.update(table.reusable())
        out.update((("proxy_cds", key), entry) for key, entry in self._proxy_cds.items())
        return out

    def proxy_clusters(self, proxy: tuple[object, ...], shared: Resources,
                       own: Mapping[str, cluster_pb2.Cluster]) -> Resources:
        """CDS of one proxy: the shared clusters plus its own (inbound, gateway, rate
        limit). The previous context's object when neither part changed, so an unchanged
        proxy's thousands of clusters are not merged into a fresh dict on every change
        (memory, and the stream then sees the very mapping it sent)."""
        old = self._before.get(("proxy_cds", proxy))
        if old is not None:
            before_own = old[1]
            own = {n: equal_or(before_own, n, c) for n, c in own.items()}
            if (old[0] is shared and before_own.keys() == own.keys()
                    and all(before_own[n] is c for n, c in own.items())):
                self._proxy_cds[proxy] = old
                return old[2]  # type: ignore[no-any-return]
        res = Resources.over(shared, own, self.version_of(own, base=shared.version))
        self._proxy_cds[proxy] = (shared, own, res)
        return res

    def before(self, key: tuple[object, ...]) -> Any:
        """What the previous context held under ``key`` (see ``_reusable``), or None."""
        return self._before.get(key)

    def same(self, key: tuple[object, ...], msg: Message) -> Message:
        """``msg``, or the previous context's message under ``key`` if equal in content."""
        return equal_or(self._before, key, msg)

    def same_set(self, key: tuple[object, ...], items: dict[str, Message]) -> Resources:
        """A shared Resources of ``items``: the previous context's object if it holds the
        very same messages (its version then needs no hashing)."""
        old = self._before.get(key)
        if (isinstance(old, Resources) and old.items.keys() == items.keys()
                and all(old.items[n] is m for n, m in items.items())):
            return old
        return Resources(items=items, version=self.version_of(items))

    # -- shared by every proxy ------------------------------------------------------------

    def endpoint_mtls(self, ep: Endpoint) -> bool:
        """Does a client sidecar speak mesh mTLS to this endpoint? (memoized)"""
        key = (ep.namespace, ep.workload, ep.port)
        if key not in self._endpoint_mtls:
            self._endpoint_mtls[key] = authn.endpoint_mtls(self.mesh, ep)
        return self._endpoint_mtls[key]

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
        got = self._routes.get(key)
        if got is None:
            vss = tuple(self.mesh.virtual_services_for(service))
            old = self._before.get(("routes", *key)) if self._routes_kept else None
            if old is not None and len(old[0]) == len(vss) \
                    and all(a is b for a, b in zip(old[0], vss, strict=True)):
                got = old  # its VirtualServices are the very same resources
            else:
                got = (vss, routes.service_routes(self.mesh, service, port, dict(labels)))
            self._routes[key] = got
        return got[1]

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

    def upstream_route_config(
        self, service: Resource, port: ServicePort, labels: Labels = ()
    ) -> route_pb2.RouteConfiguration:
        key = (service.metadata.namespace, service.metadata.name, port.port, labels)
        if key not in self._upstream_rc:
            self.routes(service, port, labels)
            old = self._before.get(("rc", *key))
            if old is not None and self._before.get(("routes", *key)) is self._routes[key]:
                self._upstream_rc[key] = old  # built from the very routes reused above
            else:
                self._upstream_rc[key] = self.same(("rc", *key), vhosts.upstream_route_config(
                    self.mesh, service, port, lambda s, p: self.routes(s, p, labels)))
        return self._upstream_rc[key]

    # -- per proxy, but often equal across proxies (memoized by their arguments) --------

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


def equal_or(before: Mapping[Any, Any], key: object, msg: Message) -> Message:
    """The message ``before`` holds under ``key`` if it equals ``msg`` in content, else
    ``msg`` (keeps unchanged content the same object from one context to the next)."""
    old = before.get(key)
    return old if old is not None and old == msg else msg  # type: ignore[no-any-return]

