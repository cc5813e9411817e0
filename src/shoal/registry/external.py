"""ServiceEntries as services of the mesh snapshot.

Each host of a ServiceEntry becomes a synthetic ``Service`` (named after the host, in the
entry's namespace, annotated with the host) and each endpoint a synthetic ``Workload``
that the service selects, so every generator handles external services like mesh ones.
Synthetic resources are built without validation (a DNS endpoint's address is a name)
and are never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from shoal.api.mesh import Protocol, ServicePort, ServiceSpec, WorkloadSpec
from shoal.api.meta import Metadata, Resource
from shoal.api.serviceentry import EntryProtocol, Resolution, ServiceEntrySpec

EXTERNAL_HOST = "networking.shoal.io/service-entry-host"
RESOLUTION = "networking.shoal.io/resolution"
SOURCE = "networking.shoal.io/service-entry"  # <ns>/<name> of the ServiceEntry
_SELECTOR = "networking.shoal.io/service-entry"
_PROTOCOLS = {EntryProtocol.HTTP: Protocol.HTTP, EntryProtocol.HTTP2: Protocol.HTTP2,
              EntryProtocol.GRPC: Protocol.GRPC, EntryProtocol.TLS: Protocol.TLS,
              EntryProtocol.HTTPS: Protocol.HTTPS}


def external_host(service: Resource) -> str | None:
    """The ServiceEntry host a synthetic service stands for (None for mesh services)."""
    return service.metadata.annotations.get(EXTERNAL_HOST)


def resolution(service: Resource) -> Resolution | None:
    value = service.metadata.annotations.get(RESOLUTION)
    return Resolution(value) if value else None


def is_dns(service: Resource) -> bool:
    """Endpoints are names Envoy resolves (DNS, DNS_ROUND_ROBIN and NONE: in proxy mode
    the original destination *is* the host name)."""
    return resolution(service) in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN, Resolution.NONE)


def _service(entry: Resource, host: str) -> Resource:
    spec: ServiceEntrySpec = entry.spec
    ports = [ServicePort.model_construct(
        name=p.name.lower(), port=p.number, protocol=_PROTOCOLS.get(p.protocol, Protocol.TCP),
        target_port=p.target_port) for p in spec.ports]
    meta = Metadata.model_construct(
        name=host, namespace=entry.metadata.namespace, labels={},
        annotations={EXTERNAL_HOST: host, RESOLUTION: spec.resolution.value,
                     SOURCE: f"{entry.metadata.namespace}/{entry.metadata.name}"},
        resource_version=entry.metadata.resource_version,
        creation_timestamp=entry.metadata.creation_timestamp)
    return Resource.model_construct(
        api_version="mesh.shoal.io/v1alpha1", kind="Service", metadata=meta,
        spec=ServiceSpec.model_construct(selector={_SELECTOR: entry.metadata.name},
                                         ports=ports))


def _workload(entry: Resource, name: str, address: str, labels: dict[str, str],
              ports: dict[str, int], locality: str = "", weight: int = 1) -> Resource:
    meta = Metadata.model_construct(name=name, namespace=entry.metadata.namespace, labels={},
                                    annotations={}, resource_version=None,
                                    creation_timestamp=None)
    spec = WorkloadSpec.model_construct(
        address=address, labels={**labels, _SELECTOR: entry.metadata.name}, ports=ports,
        service_account="default", locality=locality, weight=weight)
    return Resource.model_construct(api_version="mesh.shoal.io/v1alpha1", kind="Workload",
                                    metadata=meta, spec=spec)


def _workloads(entry: Resource) -> Iterator[Resource]:
    spec: ServiceEntrySpec = entry.spec
    prefix = f"serviceentry:{entry.metadata.name}"
    by_name = {p.name: p for p in spec.ports}
    for i, ep in enumerate(spec.endpoints):
        # the endpoint's own ports; the others by the service port's rule
        # (ServicePort.endpoint_port: targetPort, else the number)
        ports = {n.lower(): ep.ports[n] for n in by_name if ep.ports.get(n)}
        yield _workload(entry, f"{prefix}:{i}", ep.address, ep.labels, ports, ep.locality,
                        ep.weight)
    if not spec.endpoints and spec.resolution is not Resolution.STATIC:
        # DNS / NONE without endpoints: each host resolves itself (one workload per host)
        for j, host in enumerate(spec.hosts):
            yield _workload(entry, f"{prefix}:host{j}", host, {"shoal.io/host": str(j)}, {})


def synthesize(entries: Iterable[Resource]) -> tuple[list[Resource], list[Resource]]:
    """(services, workloads) standing for ``entries``; a host already defined by an older
    entry is skipped."""
    services: list[Resource] = []
    workloads: list[Resource] = []
    seen: set[str] = set()
    ordered = sorted(entries, key=lambda r: (r.metadata.creation_timestamp or "",
                                             r.metadata.namespace, r.metadata.name))
    for entry in ordered:
        spec: ServiceEntrySpec = entry.spec
        hostless = not spec.endpoints and spec.resolution is not Resolution.STATIC
        for j, host in enumerate(spec.hosts):
            if host in seen:
                continue
            seen.add(host)
            svc = _service(entry, host)
            if hostless:  # each host reaches only its own name
                sel = {**svc.spec.selector, "shoal.io/host": str(j)}
                svc = svc.model_copy(update={"spec": svc.spec.model_copy(
                    update={"selector": sel})})
            services.append(svc)
        workloads.extend(_workloads(entry))
    return services, workloads
