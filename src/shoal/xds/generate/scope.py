"""Sidecar scoping: which services (clusters, endpoints, virtual hosts) a proxy is sent.

A proxy's Sidecar is, as in Istio: the oldest Sidecar of its namespace whose
``workloadSelector`` matches its workload; else the namespace's Sidecar without a selector;
else the root namespace's Sidecar without a selector; else none (the whole mesh). The
:class:`Scope` of a Sidecar depends only on the Sidecar and the mesh, so the context
computes each scope's resources once and every proxy under that Sidecar shares them.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.api.meta import Resource, ResourceKey, oldest_first
from shoal.api.selector import selects
from shoal.api.sidecar import SidecarSpec
from shoal.registry.external import external_host
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate.egress import allow_any


@dataclass(frozen=True)
class Scope:
    """What one Sidecar lets its proxies see; ``key`` None is the mesh-wide default."""

    key: ResourceKey | None
    namespace: str = ""
    hosts: tuple[tuple[str, str], ...] = ()  # (namespace pattern, host pattern)
    allow_any: bool = False

    def visible(self, mesh: MeshSnapshot, service: Resource) -> bool:
        if self.key is None:
            return True
        ns = service.metadata.namespace
        names = _names(mesh, service)
        return any(_ns_matches(pattern_ns, ns, self.namespace)
                   and any(_host_matches(pattern_host, n) for n in names)
                   for pattern_ns, pattern_host in self.hosts)


def _names(mesh: MeshSnapshot, service: Resource) -> tuple[str, ...]:
    if external_host(service) is not None:
        return (mesh.fqdn(service),)
    return (mesh.fqdn(service), service.metadata.name,
            f"{service.metadata.name}.{service.metadata.namespace}")


def _ns_matches(pattern: str, ns: str, own: str) -> bool:
    return pattern == "*" or ns == (own if pattern == "." else pattern)


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern.lower()


def sidecar_for(mesh: MeshSnapshot, namespace: str, workload: Resource | None
                ) -> Resource | None:
    """The Sidecar that applies to a proxy of ``workload`` in ``namespace`` (or None)."""
    labels = workload.spec.labels if workload is not None else {}
    mine = sorted((s for s in mesh.of_kind("Sidecar") if s.metadata.namespace == namespace),
                  key=oldest_first)
    for s in mine:
        sel = s.spec.workload_selector
        if sel is not None and selects(sel.labels, labels):
            return s
    for within in ((namespace,), mesh.config.policy_roots):  # the oldest of the roots'
        for s in sorted(mesh.of_kind("Sidecar"), key=oldest_first):
            if s.metadata.namespace in within and s.spec.workload_selector is None:
                return s
    return None


def scope_of(mesh: MeshSnapshot, sidecar: Resource | None) -> Scope:
    default_any = allow_any(mesh.config.outbound_traffic_policy)
    if sidecar is None:
        return Scope(None, allow_any=default_any)
    spec: SidecarSpec = sidecar.spec
    hosts = tuple((h.partition("/")[0], h.partition("/")[2]) for e in spec.egress
                  for h in e.hosts) if spec.egress else (("*", "*"),)
    policy = spec.outbound_traffic_policy
    return Scope(sidecar.key, sidecar.metadata.namespace, hosts,
                 allow_any(policy.mode) if policy is not None else default_any)
