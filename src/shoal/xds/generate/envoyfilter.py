"""EnvoyFilter: Istio's patches applied to one proxy's generated config (docs/adr/0034).

Runs last in :func:`shoal.xds.generate.generate`, on the typed resources: which
EnvoyFilters select the proxy (its namespace's and the root namespaces', by
``workloadSelector``), in Istio's order (root namespaces first, then ``priority``, then the
oldest), then each ``configPatches`` entry in order. Resources shared with other proxies
are never changed in place: a type with a patch gets copies. A patch that matches nothing
does nothing (Istio's behaviour); a patch Envoy would reject is refused when it is applied
(:mod:`shoal.control.admission`).

Contexts: a gateway proxy's listeners, routes and clusters are ``GATEWAY``; a sidecar's
listeners with ``traffic_direction: INBOUND`` (and the routes they use, and the
``inbound|`` clusters) are ``SIDECAR_INBOUND``; the rest ``SIDECAR_OUTBOUND``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from shoal.api.envoyfilter import (
    ApplyTo,
    ClusterMatch,
    ConfigPatch,
    Context,
    EnvoyFilterSpec,
    FilterChainMatch,
    ListenerMatch,
    Operation,
    RouteAction,
    RouteConfigurationMatch,
    VirtualHostMatch,
)
from shoal.api.gateway import GATEWAY_ANNOTATION
from shoal.api.meta import Resource, oldest_first
from shoal.api.selector import selects
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.types import CLUSTER, LISTENER, ROUTE, Proxy, ProxySnapshot, Resources

KIND = "EnvoyFilter"
HCM = "envoy.filters.network.http_connection_manager"


# -- which EnvoyFilters, in which order --------------------------------------------------------

def filters_for(mesh: MeshSnapshot, namespace: str, workload: Resource | None
                ) -> list[Resource]:
    """The EnvoyFilters that apply to a proxy in ``namespace`` running ``workload``: root
    namespaces' first, then by priority, then the oldest."""
    roots = mesh.config.policy_roots
    labels = workload.spec.labels if workload is not None else {}
    out = []
    for r in mesh.of_kind(KIND):
        spec: EnvoyFilterSpec = r.spec
        ns = r.metadata.namespace
        if ns != namespace and ns not in roots:
            continue
        sel = spec.workload_selector
        if sel is not None and sel.labels and not selects(sel.labels, labels):
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.metadata.namespace not in roots, r.spec.priority,
                                      oldest_first(r)))


# -- merging (proto merge, with typed configs merged inside their Any) ------------------------

def _unpack(a: any_pb2.Any) -> Message | None:
    try:
        cls = symbol_database.Default().GetSymbol(a.TypeName())
    except KeyError:
        return None
    msg = cls()
    return msg if a.Unpack(msg) else None


def merge(dst: Message, src: Message) -> None:
    """``src`` into ``dst`` as Istio's MERGE does: proto merge semantics (set scalars
    replace, repeated fields append, messages merge field by field), and an Any holding
    the same type on both sides is merged as that type, not replaced as bytes."""
    if isinstance(dst, any_pb2.Any) and isinstance(src, any_pb2.Any):
        if dst.type_url == src.type_url and (a := _unpack(dst)) and (b := _unpack(src)):
            merge(a, b)
            dst.Pack(a)
        else:
            dst.CopyFrom(src)
        return
    for fd, value in src.ListFields():
        if fd.is_repeated:
            target = getattr(dst, fd.name)
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                for k, v in value.items():
                    if fd.message_type.fields_by_name["value"].message_type is not None:
                        merge(target[k], v)
                    else:
                        target[k] = v
            elif fd.message_type is not None:
                for v in value:
                    target.add().CopyFrom(v)
            else:
                target.extend(value)
        elif fd.message_type is not None:
            sub = getattr(dst, fd.name)
            sub.SetInParent()  # an empty message in the patch (`{}`) still sets the field
            merge(sub, value)
        else:
            setattr(dst, fd.name, value)


def _place(items: list[Any], index: int | None, op: Operation, value: Message,
           replace_at: Callable[[int], None]) -> bool:
    """ADD / INSERT_* / REPLACE of ``value`` in a repeated field given as a list copy
    (``index``: the matched element); returns whether the list changed."""
    if op is Operation.ADD:
        items.append(value)
    elif op is Operation.INSERT_FIRST or (op is Operation.INSERT_BEFORE and index is None):
        items.insert(0, value)
    elif op is Operation.INSERT_BEFORE:
        assert index is not None
        items.insert(index, value)
    elif op is Operation.INSERT_AFTER:
        items.insert(len(items) if index is None else index + 1, value)
    elif op is Operation.REPLACE and index is not None:
        replace_at(index)
        items[index] = value
    else:
        return False
    return True


def _set_repeated(field_: Any, items: Sequence[Message]) -> None:
    copies = [type(m)() for m in items]
    for c, m in zip(copies, items, strict=True):
        c.CopyFrom(m)
    del field_[:]
    field_.extend(copies)


def _ordered(field_: Any, named: Callable[[Message], bool], op: Operation, value: Message,
             need_target: bool) -> None:
    """One patch on a repeated field of named elements (filters, routes)."""
    items = list(field_)
    targets = [i for i, m in enumerate(items) if named(m)]
    if not targets and (need_target or op in (Operation.MERGE, Operation.REMOVE,
                                               Operation.REPLACE)):
        return
    if op is Operation.MERGE:
        for i in targets:
            merge(field_[i], value)
        return
    if op is Operation.REMOVE:
        _set_repeated(field_, [m for i, m in enumerate(items) if i not in targets])
        return
    index = targets[0] if targets else None
    if op is Operation.INSERT_AFTER and targets:
        index = targets[-1]
    if _place(items, index, op, value, lambda i: None):
        _set_repeated(field_, items)


# -- contexts and matches ---------------------------------------------------------------------

def _context_ok(wanted: Context, actual: Context) -> bool:
    return wanted is Context.ANY or wanted is actual


def _listener_context(listener: listener_pb2.Listener, gateway: bool) -> Context:
    if gateway:
        return Context.GATEWAY
    return (Context.SIDECAR_INBOUND if listener.traffic_direction == base_pb2.INBOUND
            else Context.SIDECAR_OUTBOUND)


@dataclass
class _Proxy:
    """What the matchers need to know about the proxy being patched."""

    gateway: bool
    app_ports: dict[str, int]
    service_ports: dict[str, set[int]]  # port name -> the workload's services' ports
    route_contexts: dict[str, Context] = field(default_factory=dict)

    def listener_ports(self, listener: listener_pb2.Listener) -> set[int]:
        """The ports ``listener.portNumber`` may name: the bound port; for an inbound
        listener also the application's and its services' port; for an upstream
        listener the upstream service's port."""
        out = {listener.address.socket_address.port_value}
        parts = listener.name.split("|")
        if parts[0] == "inbound" and len(parts) == 3:
            if parts[1] in self.app_ports:
                out.add(self.app_ports[parts[1]])
            out |= self.service_ports.get(parts[1], set())
        elif parts[0] == "upstream" and len(parts) == 3 and parts[2].isdigit():
            out.add(int(parts[2]))
        return out


def _hcm(f: lc_pb2.Filter) -> hcm_pb2.HttpConnectionManager | None:
    if f.name != HCM:
        return None
    hcm = hcm_pb2.HttpConnectionManager()
    return hcm if f.typed_config.Unpack(hcm) else None


def _chain_matches(chain: lc_pb2.FilterChain, m: FilterChainMatch | None) -> bool:
    if m is None:
        return True
    fcm = chain.filter_chain_match
    if m.name is not None and chain.name != m.name:
        return False
    if m.sni is not None and m.sni not in fcm.server_names:
        return False
    if m.transport_protocol is not None and (
            fcm.transport_protocol or "raw_buffer") != m.transport_protocol:
        return False
    if m.application_protocols is not None and not (
            set(m.application_protocols.split(",")) & set(fcm.application_protocols)):
        return False
    if m.destination_port is not None and fcm.destination_port.value != m.destination_port:
        return False
    if m.filter is not None:
        found = [f for f in chain.filters if f.name == m.filter.name]
        if not found:
            return False
        if m.filter.sub_filter is not None:
            hcms = [h for f in found if (h := _hcm(f)) is not None]
            if not any(hf.name == m.filter.sub_filter.name for h in hcms
                       for hf in h.http_filters):
                return False
    return True


def _listener_matches(lis: listener_pb2.Listener, m: ListenerMatch | None, p: _Proxy) -> bool:
    if m is None:
        return True
    if m.name is not None and lis.name != m.name:
        return False
    if m.port_number is not None and m.port_number not in p.listener_ports(lis):
        return False
    return m.filter_chain is None or any(_chain_matches(c, m.filter_chain)
                                         for c in lis.filter_chains)


def _parse_cluster(name: str) -> tuple[int, str, str] | None:
    parts = name.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[1].isdigit():
        return int(parts[1]), parts[2], parts[3]
    return None


def _cluster_matches(name: str, m: ClusterMatch | None) -> bool:
    if m is None:
        return True
    if m.name is not None and name != m.name:
        return False
    if m.port_number is None and m.service is None and m.subset is None:
        return True
    parsed = _parse_cluster(name)
    if parsed is None:
        return False
    port, subset, fqdn = parsed
    return ((m.port_number is None or port == m.port_number)
            and (m.service is None or fqdn == m.service)
            and (m.subset is None or subset == m.subset))


def _vhost_port(vh: rc_pb2.VirtualHost) -> int | None:
    tail = vh.name.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _vhost_matches(vh: rc_pb2.VirtualHost, m: VirtualHostMatch | None) -> bool:
    if m is None:
        return True
    if m.name and vh.name != m.name:
        return False
    return m.domain_name is None or m.domain_name in vh.domains


def _route_matches(route: rc_pb2.Route, m: VirtualHostMatch | None) -> bool:
    rm = m.route if m is not None else None
    if rm is None:
        return True
    if rm.name is not None and route.name != rm.name:
        return False
    kind = {RouteAction.ROUTE: "route", RouteAction.REDIRECT: "redirect",
            RouteAction.DIRECT_RESPONSE: "direct_response"}.get(rm.action)
    return kind is None or route.WhichOneof("action") == kind


# -- applying ---------------------------------------------------------------------------------

class _Patcher:
    """The patches of one proxy, over copies of its listeners, routes and clusters."""

    def __init__(self, snap: ProxySnapshot, p: _Proxy) -> None:
        self.p = p
        self.listeners = _copies(snap.get(LISTENER).items)
        self.routes = _copies(snap.get(ROUTE).items)
        self.clusters = _copies(snap.get(CLUSTER).items)
        for lis in self.listeners.values():
            ctx = _listener_context(lis, p.gateway)
            for chain in lis.filter_chains:
                for f in chain.filters:
                    if (h := _hcm(f)) is not None and h.HasField("rds"):
                        p.route_contexts.setdefault(h.rds.route_config_name, ctx)

    def apply(self, cp: ConfigPatch, value: Message | None) -> None:
        {ApplyTo.LISTENER: self._listener, ApplyTo.FILTER_CHAIN: self._filter_chain,
         ApplyTo.NETWORK_FILTER: self._network_filter, ApplyTo.HTTP_FILTER: self._http_filter,
         ApplyTo.ROUTE_CONFIGURATION: self._route_configuration,
         ApplyTo.VIRTUAL_HOST: self._virtual_host, ApplyTo.HTTP_ROUTE: self._http_route,
         ApplyTo.CLUSTER: self._cluster}[cp.apply_to](cp, value)

    # listeners and what is inside them

    def _matched_listeners(self, cp: ConfigPatch) -> Iterator[listener_pb2.Listener]:
        for lis in self.listeners.values():
            if (_context_ok(cp.match.context, _listener_context(lis, self.p.gateway))
                    and _listener_matches(lis, cp.match.listener, self.p)):
                yield lis

    def _context_applies(self, context: Context) -> bool:
        if context is Context.ANY:
            return True
        return (context is Context.GATEWAY) == self.p.gateway

    def _top_level(self, items: dict[str, Any], cp: ConfigPatch, value: Message | None,
                   matched: Iterable[str]) -> None:
        """ADD / REMOVE / MERGE of listeners or clusters (by name): ADD needs only the
        context; the others act on the ``matched`` names."""
        op = cp.patch.operation
        if op is Operation.ADD:
            name = getattr(value, "name", "")
            if self._context_applies(cp.match.context) and name not in items:
                items[name] = value
            return
        for name in list(matched):
            if op is Operation.REMOVE:
                del items[name]
            else:
                assert value is not None
                merge(items[name], value)

    def _listener(self, cp: ConfigPatch, value: Message | None) -> None:
        self._top_level(self.listeners, cp, value,
                        [lis.name for lis in self._matched_listeners(cp)])

    def _matched_chains(self, cp: ConfigPatch) -> Iterator[lc_pb2.FilterChain]:
        fc = cp.match.listener.filter_chain if cp.match.listener is not None else None
        for lis in self._matched_listeners(cp):
            for chain in lis.filter_chains:
                if _chain_matches(chain, fc):
                    yield chain

    def _filter_chain(self, cp: ConfigPatch, value: Message | None) -> None:
        op = cp.patch.operation
        if op is Operation.ADD:
            for lis in list(self._matched_listeners(cp)):
                lis.filter_chains.add().CopyFrom(value)
            return
        fc = cp.match.listener.filter_chain if cp.match.listener is not None else None
        for lis in self._matched_listeners(cp):
            if op is Operation.REMOVE:
                _set_repeated(lis.filter_chains, [c for c in lis.filter_chains
                                                  if not _chain_matches(c, fc)])
            else:
                for chain in lis.filter_chains:
                    if _chain_matches(chain, fc):
                        assert value is not None
                        merge(chain, value)

    def _filter_name(self, cp: ConfigPatch) -> str | None:
        lm = cp.match.listener
        f = lm.filter_chain.filter if lm is not None and lm.filter_chain is not None else None
        return f.name if f is not None else None

    def _sub_filter_name(self, cp: ConfigPatch) -> str | None:
        lm = cp.match.listener
        f = lm.filter_chain.filter if lm is not None and lm.filter_chain is not None else None
        return f.sub_filter.name if f is not None and f.sub_filter is not None else None

    def _network_filter(self, cp: ConfigPatch, value: Message | None) -> None:
        name = self._filter_name(cp)
        for chain in list(self._matched_chains(cp)):
            _ordered(chain.filters, lambda f: f.name == name, cp.patch.operation,
                     value or lc_pb2.Filter(), need_target=name is not None)

    def _http_filter(self, cp: ConfigPatch, value: Message | None) -> None:
        name = self._sub_filter_name(cp)
        for chain in list(self._matched_chains(cp)):
            for f in chain.filters:
                hcm = _hcm(f)
                if hcm is None:
                    continue
                _ordered(hcm.http_filters, lambda hf: hf.name == name, cp.patch.operation,
                         value or hcm_pb2.HttpFilter(), need_target=name is not None)
                f.typed_config.Pack(hcm)

    # route configurations

    def _route_context(self, name: str) -> Context:
        if self.p.gateway:
            return Context.GATEWAY
        return self.p.route_contexts.get(name, Context.SIDECAR_OUTBOUND)

    def _matched_routes(self, cp: ConfigPatch) -> Iterator[route_pb2.RouteConfiguration]:
        m: RouteConfigurationMatch | None = cp.match.route_configuration
        for rc in self.routes.values():
            if not _context_ok(cp.match.context, self._route_context(rc.name)):
                continue
            if m is not None and m.name is not None and rc.name != m.name:
                continue
            if m is not None and m.port_number is not None and not self._rc_port(rc, m):
                continue
            yield rc

    def _rc_port(self, rc: route_pb2.RouteConfiguration, m: RouteConfigurationMatch) -> bool:
        """``portNumber``: a route configuration of a listener bound to / serving that
        port, or (one route configuration for every port: outbound_http) one with a
        virtual host for that port."""
        for lis in self.listeners.values():
            for chain in lis.filter_chains:
                for f in chain.filters:
                    h = _hcm(f)
                    if (h is not None and h.HasField("rds")
                            and h.rds.route_config_name == rc.name
                            and m.port_number in self.p.listener_ports(lis)):
                        return True
        return any(_vhost_port(vh) == m.port_number for vh in rc.virtual_hosts)

    def _vhosts(self, cp: ConfigPatch, rc: route_pb2.RouteConfiguration
                ) -> list[rc_pb2.VirtualHost]:
        m = cp.match.route_configuration
        port = m.port_number if m is not None else None
        vm = m.vhost if m is not None else None
        return [vh for vh in rc.virtual_hosts if _vhost_matches(vh, vm)
                and (port is None or _vhost_port(vh) in (None, port))]

    def _route_configuration(self, cp: ConfigPatch, value: Message | None) -> None:
        for rc in list(self._matched_routes(cp)):
            assert value is not None
            merge(rc, value)

    def _virtual_host(self, cp: ConfigPatch, value: Message | None) -> None:
        op = cp.patch.operation
        for rc in list(self._matched_routes(cp)):
            if op is Operation.ADD:
                rc.virtual_hosts.add().CopyFrom(value)
                continue
            chosen = self._vhosts(cp, rc)
            if op is Operation.REMOVE:
                _set_repeated(rc.virtual_hosts, [vh for vh in rc.virtual_hosts
                                                 if vh not in chosen])
            else:
                for vh in chosen:
                    assert value is not None
                    merge(vh, value)

    def _http_route(self, cp: ConfigPatch, value: Message | None) -> None:
        vm = cp.match.route_configuration.vhost if cp.match.route_configuration else None
        for rc in list(self._matched_routes(cp)):
            for vh in self._vhosts(cp, rc):
                _ordered(vh.routes, lambda r: _route_matches(r, vm), cp.patch.operation,
                         value or rc_pb2.Route(),
                         need_target=vm is not None and vm.route is not None)

    # clusters

    def _cluster_context(self, name: str) -> Context:
        if self.p.gateway:
            return Context.GATEWAY
        return (Context.SIDECAR_INBOUND if name.startswith("inbound|")
                else Context.SIDECAR_OUTBOUND)

    def _cluster(self, cp: ConfigPatch, value: Message | None) -> None:
        self._top_level(self.clusters, cp, value, [
            name for name in self.clusters
            if _context_ok(cp.match.context, self._cluster_context(name))
            and _cluster_matches(name, cp.match.cluster)])


def _copies(items: Mapping[str, Message]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, m in items.items():
        c = type(m)()
        c.CopyFrom(m)
        out[k] = c
    return out


# Kinds the patches of a proxy depend on (which EnvoyFilters select it, by its workload
# and the ports of its services).
INPUTS = frozenset({"EnvoyFilter", "Workload", "Service"})


def apply(mesh: MeshSnapshot, proxy: Proxy, workload: Resource | None, snap: ProxySnapshot,
          value_of: Callable[[Resource, int], Message | None],
          version_of: Callable[[MutableMapping[str, Message]], str]) -> ProxySnapshot:
    """``snap`` with the EnvoyFilters that select the proxy applied; ``snap`` itself when
    none does. ``value_of(filter, i)`` gives patch ``i``'s parsed value (memoized by the
    caller; never modified here)."""
    found = filters_for(mesh, proxy.namespace, workload)
    if not found:
        return snap
    services: dict[str, set[int]] = {}
    if workload is not None:
        for svc in mesh.services_of_workload(workload):
            for port in svc.spec.ports:
                services.setdefault(port.name, set()).add(port.port)
    p = _Proxy(gateway=workload is not None
               and GATEWAY_ANNOTATION in workload.metadata.annotations,
               app_ports=dict(proxy.metadata.app_ports), service_ports=services)
    patcher = _Patcher(snap, p)
    for ef in found:
        spec: EnvoyFilterSpec = ef.spec
        for i, cp in enumerate(spec.config_patches):
            value = value_of(ef, i)
            copy = None
            if value is not None:
                copy = type(value)()
                copy.CopyFrom(value)
            patcher.apply(cp, copy)
    out = dict(snap.resources)
    for type_url, items in ((LISTENER, patcher.listeners), (ROUTE, patcher.routes),
                            (CLUSTER, patcher.clusters)):
        out[type_url] = Resources(items=items, version=version_of(items))
    return ProxySnapshot(resources=out, mesh_revision=snap.mesh_revision)
