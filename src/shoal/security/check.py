"""``shoal authz check``: resolve "from workload, to service" into requests to each of the
service's workloads and evaluate them (pure; the CLI fetches the resources)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.api.meta import Resource
from shoal.errors import NotFound
from shoal.registry.snapshot import MeshSnapshot, has_sidecar
from shoal.security.evaluate import Decision, Request, evaluate
from shoal.security.model import MtlsMode
from shoal.security.scoping import mtls_mode


@dataclass(frozen=True)
class Verdict:
    workload: str  # "<namespace>/<name>" of the destination workload
    port: int  # the port its sidecar receives on
    mtls: bool
    decision: Decision

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "port": self.port, "mtls": self.mtls,
                **self.decision.as_dict()}


def _workload(mesh: MeshSnapshot, ref: str, namespace: str) -> Resource:
    ns, _, name = ref.rpartition("/")
    wl = mesh.workload(ns or namespace, name)
    if wl is None:
        raise NotFound(f"no workload {ns or namespace}/{name}")
    return wl


def check(mesh: MeshSnapshot, source: str, service: str, *, namespace: str = "default",
          port: int | None = None, method: str = "GET", path: str = "/",
          headers: Mapping[str, str] | None = None,
          claims: Mapping[str, Any] | None = None) -> list[Verdict]:
    """One verdict per workload of ``service`` (a host as an app in ``source``'s namespace
    would name it). ``source``: "name" or "namespace/name" of the calling workload."""
    src = _workload(mesh, source, namespace)
    svc = mesh.resolve_host(service, src.metadata.namespace)
    if svc is None:
        raise NotFound(f"no service {service!r} (seen from namespace "
                       f"{src.metadata.namespace})")
    sport = svc.spec.port(port) if port is not None else svc.spec.ports[0]
    if sport is None:
        raise NotFound(f"service {service!r} has no port {port}")
    td = mesh.config.trust_domain
    out = []
    for ep in mesh.endpoints(svc, sport):
        wl = mesh.workload(ep.namespace, ep.workload)
        assert wl is not None
        mtls = (has_sidecar(src) and ep.sidecar
                and mtls_mode(mesh, wl, ep.port) is not MtlsMode.DISABLE)
        req = Request(
            port=ep.port, http=sport.protocol.is_http,
            principal=(f"{td}/ns/{src.metadata.namespace}/sa/{src.spec.service_account}"
                       if mtls else None),
            source_ip=src.spec.address, method=method, path=path,
            host=f"{service}:{sport.port}",
            headers={k.lower(): v for k, v in (headers or {}).items()}, claims=claims,
        )
        out.append(Verdict(f"{ep.namespace}/{ep.workload}", ep.port, mtls,
                           evaluate(mesh, wl, req)))
    return out


def check_gateway(mesh: MeshSnapshot, gateway: str, *, namespace: str = "default",
                  port: int, method: str = "GET", path: str = "/", host: str = "",
                  headers: Mapping[str, str] | None = None,
                  claims: Mapping[str, Any] | None = None,
                  source_ip: str | None = None) -> Verdict:
    """The verdict of a gateway workload (``gateway``: NAME or NS/NAME) on a request from
    outside the mesh (no peer identity) to its server on ``port``."""
    wl = _workload(mesh, gateway, namespace)
    req = Request(port=port, http=True, principal=None, source_ip=source_ip, method=method,
                  path=path, host=host,
                  headers={k.lower(): v for k, v in (headers or {}).items()}, claims=claims)
    return Verdict(f"{wl.metadata.namespace}/{wl.metadata.name}", port, False,
                   evaluate(mesh, wl, req))
