"""A consistent, immutable view of the mesh at one store revision.

Built by the sync loop from the store; read by the (pure) generators. Indexes are
computed lazily once per snapshot, so generating config for many proxies from one
snapshot does the lookups once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address

from shoal.api.mesh import ServicePort, ServiceSpec, WorkloadSpec
from shoal.api.meshconfig import ExtensionProvider
from shoal.api.meta import Resource, ResourceKey, oldest_first
from shoal.api.networking import DestinationRuleSpec, VirtualServiceSpec, for_mesh
from shoal.api.selector import selects
from shoal.registry import gamma, gateways, vip
from shoal.registry.external import external_host, synthesize
from shoal.registry.readiness import READY_ANNOTATION, is_ready  # noqa: F401 (re-exported)


class AccessLogMode(StrEnum):
    """Which requests a sidecar writes to its access log (MeshConfig ``access_log``)."""

    ALL = "all"
    ERRORS = "errors"
    OFF = "off"


@dataclass(frozen=True)
class MeshConfig:
    """Mesh-wide settings (embedded defaults; later a MeshConfig kind)."""

    domain: str = "cluster.local"  # services are <name>.<namespace>.svc.<domain>
    trust_domain: str = "cluster.local"
    # Tracing: None (the default) puts no tracer in the sidecars, like Istio since 1.22,
    # Linkerd, Consul and Kuma: Envoy's tracer costs every request, sampled or not, about
    # a tenth of a sidecar pair's throughput (docs/adr/0031). A number turns it on: the
    # percent of new requests traced (1 is a usual production rate); a caller's sampled
    # trace is always continued. `shoal up` uses 100.
    trace_sampling: float | None = None
    # Stream every access-log entry to the control plane over OTLP (`shoal logs`,
    # the dashboard's log view). Off by default: per-request work in the control plane
    # (docs/adr/0027); each sidecar's JSON access log stays in its run dir.
    access_log_stream: bool = False
    # Which requests each sidecar writes to its local JSON access log (`shoal logs`):
    # "all", "errors" (4xx/5xx, a response flag, a gRPC status other than OK; the
    # default: logging every request costs Envoy CPU on the request path, and Istio,
    # Linkerd, Consul and Kuma all ship with access logs off; docs/adr/0029) or "off".
    # TCP connections are always logged (one line per connection). `shoal up`: "all".
    access_log: AccessLogMode = AccessLogMode.ERRORS
    # shoal's root namespace: its PeerAuthentication / AuthorizationPolicy /
    # RequestAuthentication / Sidecar without a selector apply mesh-wide, and the mesh's
    # own identities live in it (operators' revocations, gateways, the Prometheus scraper).
    root_namespace: str = "shoal-system"
    # Istio's root namespace: mesh-wide policies written for Istio are honoured there too,
    # so Istio's files work unchanged (docs/adr/0032); "" honours root_namespace only.
    istio_root_namespace: str = "istio-system"
    # Egress for hosts that are neither services nor ServiceEntries (docs/adr/0009):
    # REGISTRY_ONLY answers 404, ALLOW_ANY forwards them (dynamic forward proxy).
    outbound_traffic_policy: str = "REGISTRY_ONLY"
    # HOST:PORT of a separate rate-limit service; None: the control plane's own (ADR 0010)
    ratelimit_address: str | None = None
    # SPIFFE ID of that service's certificate: sidecars reach it over mTLS and verify it
    # (ADR 0025); None: it is a development one (`--insecure-plaintext`), plaintext
    ratelimit_identity: str | None = None
    # HOST:PORT of the control plane's agents' TLS listener where sidecars POST Zipkin spans
    # over mTLS (ADR 0008, 0025); None: the control plane's own --agent-api address;
    # "": W3C-only OpenTelemetry tracer over xDS
    trace_collector: str | None = None
    # Multi-cluster (docs/multicluster.md, ADR 0016): this control plane's cluster and the
    # network its workloads are on by default. "" = single cluster, one flat network.
    cluster: str = ""
    network: str = ""
    # Istio's MeshConfig extensionProviders (`--mesh-config FILE`): the external
    # authorizers AuthorizationPolicy action CUSTOM names (docs/adr/0033)
    extension_providers: tuple[ExtensionProvider, ...] = field(default=(), hash=False)

    def extension_provider(self, name: str) -> ExtensionProvider | None:
        return next((p for p in self.extension_providers if p.name == name), None)

    @property
    def policy_roots(self) -> tuple[str, ...]:
        """Namespaces whose policies without a selector apply mesh-wide: shoal's root
        namespace and Istio's (docs/adr/0032)."""
        extra = self.istio_root_namespace
        return (self.root_namespace,) + ((extra,) if extra and extra != self.root_namespace
                                         else ())


REGISTERED_BY = "shoal.io/registered-by"
TLS_MODE_LABEL = "security.shoal.io/tlsMode"
def mtls_disabled(workload: Resource) -> bool:
    """Labelled ``security.shoal.io/tlsMode: disabled``: e.g. registered by an agent that
    has no identity (no token), so its sidecar can neither accept nor offer mesh mTLS."""
    return "disabled" in (workload.spec.labels.get(TLS_MODE_LABEL),
                          workload.metadata.labels.get(TLS_MODE_LABEL))


def has_sidecar(workload: Resource) -> bool:
    """Does the workload's sidecar speak mesh mTLS? Registered by a shoal agent, or labelled
    ``security.shoal.io/tlsMode: istio`` (like Istio's ``security.istio.io/tlsMode``), e.g.
    for hand-written workloads -- unless labelled ``security.shoal.io/tlsMode: disabled``."""
    meta = workload.metadata
    if mtls_disabled(workload):
        return False
    return (meta.annotations.get(REGISTERED_BY) == "agent"
            or workload.spec.labels.get(TLS_MODE_LABEL) == "istio"
            or meta.labels.get(TLS_MODE_LABEL) == "istio")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Endpoint:
    """One address:port serving one port of one service, from one workload."""

    workload: str
    namespace: str
    address: str
    port: int
    labels: tuple[tuple[str, str], ...]
    locality: str
    weight: int
    service_account: str
    sidecar: bool = False  # the workload runs a shoal sidecar (it can speak mesh mTLS)

    def matches(self, selector: dict[str, str]) -> bool:
        return selects(selector, dict(self.labels))


@dataclass(frozen=True)
class MeshSnapshot:
    revision: int
    resources: tuple[Resource, ...]
    config: MeshConfig = field(default_factory=MeshConfig)

    @staticmethod
    def build(resources: Iterable[Resource], revision: int,
              config: MeshConfig | None = None) -> MeshSnapshot:
        return MeshSnapshot.of({r.key: r for r in resources}, revision, config)

    @staticmethod
    def of(by_key: Mapping[ResourceKey, Resource], revision: int,
           config: MeshConfig | None = None) -> MeshSnapshot:
        """The mesh of resources by key, ordered by key (kind, namespace, name): the
        keys are plain tuples of strings, so ordering them is C comparisons only (the
        control plane orders every resource again on each change)."""
        return MeshSnapshot(revision, tuple(by_key[k] for k in sorted(by_key)),
                            config or MeshConfig())

    # -- indexes ---------------------------------------------------------------------------

    @cached_property
    def _by_kind(self) -> dict[str, list[Resource]]:
        out: dict[str, list[Resource]] = defaultdict(list)
        for r in self.resources:
            out[r.kind].append(r)
        if out.get("ServiceEntry"):  # external services, as synthetic Services/Workloads
            services, workloads = synthesize(out["ServiceEntry"])
            out["Service"] = out["Service"] + services
            out["Workload"] = out["Workload"] + workloads
        routes = [r for k in gamma.KINDS_ROUTES for r in out.get(k, [])]
        if routes:  # Gateway API mesh routes, as synthetic VirtualServices
            taken = set(gamma.routed_hosts(out["VirtualService"], self.config.domain))
            out["VirtualService"] = out["VirtualService"] + gamma.mesh_routes(
                routes, out["Service"], taken, self.config.domain,
                out.get("ReferenceGrant", []))
        if out.get(gateways.KIND):  # Gateway API Gateways, as synthetic Istio Gateways
            scene = gateways.Scene.of(out[gateways.KIND], out["GatewayClass"],
                                      out["Namespace"])
            istio, vss = gateways.translate(scene,
                                            [r for k in gateways.ROUTE_KINDS for r in out[k]],
                                            out["Service"], out.get("ReferenceGrant", []),
                                            self.config.domain)
            out["Gateway"] = out["Gateway"] + istio
            out["VirtualService"] = out["VirtualService"] + vss
        return out

    @cached_property
    def _external(self) -> dict[str, Resource]:
        return {h: s for s in self.services if (h := external_host(s)) is not None}

    def of_kind(self, kind: str) -> list[Resource]:
        return self._by_kind.get(kind, [])

    @property
    def services(self) -> list[Resource]:
        return self.of_kind("Service")

    @property
    def workloads(self) -> list[Resource]:
        return self.of_kind("Workload")

    @cached_property
    def _services(self) -> dict[tuple[str, str], Resource]:
        return {(r.metadata.namespace, r.metadata.name): r for r in self.services}

    @cached_property
    def _workloads(self) -> dict[tuple[str, str], Resource]:
        return {(r.metadata.namespace, r.metadata.name): r for r in self.workloads}

    def service(self, namespace: str, name: str) -> Resource | None:
        return self._services.get((namespace, name))

    def workload(self, namespace: str, name: str) -> Resource | None:
        return self._workloads.get((namespace, name))

    # -- names ----------------------------------------------------------------------------

    def fqdn(self, service: Resource) -> str:
        if (host := external_host(service)) is not None:
            return host
        return f"{service.metadata.name}.{service.metadata.namespace}.svc.{self.config.domain}"

    @cached_property
    def vips(self) -> Mapping[str, IPv4Address]:
        """Service host (fqdn) -> virtual IP, for pods with transparent capture (vip.py)."""
        return vip.allocate(self.fqdn(s) for s in self.services)

    def resolve_host(self, host: str, namespace: str) -> Resource | None:
        """Istio host semantics: a short name is relative to ``namespace``."""
        host = host.lower().rstrip(".")
        if host in self._external:
            return self._external[host]
        full = gamma.fqdn(host, namespace, self.config.domain)
        parts = full.split(".")
        if (full.endswith(".svc." + self.config.domain)
                and len(parts) == 3 + len(self.config.domain.split("."))):
            return self.service(parts[1], parts[0])
        return None

    # -- endpoints ------------------------------------------------------------------------

    @cached_property
    def _members(self) -> dict[tuple[str, str], list[Resource]]:
        """(namespace, service) -> workloads its selector picks, in name order.

        Workloads are indexed by (namespace, label, value) once, so each service looks
        only at the workloads carrying its selector's first label (O(services + workloads)
        for typical selectors, not their product)."""
        by_label: dict[tuple[str, str, str], list[Resource]] = defaultdict(list)
        for wl in self.workloads:
            for k, v in wl.spec.labels.items():
                by_label[(wl.metadata.namespace, k, v)].append(wl)
        out: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        for svc in self.services:
            spec: ServiceSpec = svc.spec
            if not spec.selector:
                continue
            first = next(iter(spec.selector.items()))
            for wl in by_label.get((svc.metadata.namespace, *first), ()):
                wspec: WorkloadSpec = wl.spec
                if selects(spec.selector, wspec.labels):
                    out[(svc.metadata.namespace, svc.metadata.name)].append(wl)
        return out

    def endpoints(self, service: Resource, port: ServicePort,
                  subset: dict[str, str] | None = None) -> list[Endpoint]:
        out = []
        for wl in self._members.get((service.metadata.namespace, service.metadata.name), []):
            if not is_ready(wl):
                continue
            spec: WorkloadSpec = wl.spec
            ep = Endpoint(
                workload=wl.metadata.name,
                namespace=wl.metadata.namespace,
                address=spec.address,
                port=port.endpoint_port(spec.ports),
                labels=tuple(sorted(spec.labels.items())),
                locality=spec.locality,
                weight=spec.weight,
                service_account=spec.service_account,
                sidecar=has_sidecar(wl),
            )
            if subset is None or ep.matches(subset):
                out.append(ep)
        return out

    @cached_property
    def _services_of(self) -> dict[tuple[str, str], list[Resource]]:
        out: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        for (ns, name), members in self._members.items():
            svc = self._services[(ns, name)]
            for wl in members:
                out[(wl.metadata.namespace, wl.metadata.name)].append(svc)
        return out

    def services_of_workload(self, workload: Resource) -> list[Resource]:
        return list(self._services_of.get((workload.metadata.namespace,
                                           workload.metadata.name), []))

    def members(self, service: Resource) -> list[Resource]:
        """The workloads ``service`` selects, in name order."""
        return list(self._members.get((service.metadata.namespace, service.metadata.name), []))

    # -- routing config -------------------------------------------------------------------

    @cached_property
    def _virtual_services(self) -> dict[int, list[Resource]]:
        """id(service) -> the mesh VirtualServices whose hosts name it, oldest first."""
        out: dict[int, list[Resource]] = defaultdict(list)
        for vs in self.of_kind("VirtualService"):
            spec: VirtualServiceSpec = vs.spec
            if not for_mesh(spec.gateways):
                continue  # bound to gateways only (see xds.generate.gateway)
            named = {id(s) for h in spec.hosts
                     if (s := self.resolve_host(h, vs.metadata.namespace)) is not None}
            for key in named:  # once per service, however many hosts name it
                out[key].append(vs)
        for vss in out.values():
            vss.sort(key=oldest_first)
        return out

    @cached_property
    def _destination_rules(self) -> dict[int, Resource]:
        """id(service) -> the oldest DestinationRule whose host names it."""
        out: dict[int, Resource] = {}
        for dr in sorted(self.of_kind("DestinationRule"), key=oldest_first):
            spec: DestinationRuleSpec = dr.spec
            if (s := self.resolve_host(spec.host, dr.metadata.namespace)) is not None:
                out.setdefault(id(s), dr)
        return out

    def virtual_services_for(self, service: Resource) -> list[Resource]:
        """VirtualServices whose hosts name ``service``, oldest first (Istio's tie-break)."""
        return list(self._virtual_services.get(id(service), ()))

    def destination_rule_for(self, service: Resource) -> Resource | None:
        return self._destination_rules.get(id(service))


def services_of_workloads(meshes: Iterable[MeshSnapshot | None],
                          workloads: Iterable[tuple[str, str]]
                          ) -> list[tuple[MeshSnapshot, Resource]]:
    """(mesh, service) for every service that selects one of ``workloads`` (namespace,
    name) in one of ``meshes`` (typically the mesh before a change and after it)."""
    keys = list(workloads)
    return [(mesh, svc) for mesh in meshes if mesh is not None for ns, name in keys
            if (wl := mesh.workload(ns, name)) is not None
            for svc in mesh.services_of_workload(wl)]
