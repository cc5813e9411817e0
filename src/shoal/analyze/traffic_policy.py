"""``shoal analyze`` checks of DestinationRule traffic policies that validate but cannot
work as meant: TLS origination and locality load balancing.

* ``double-tls``: tls SIMPLE / MUTUAL on a ServiceEntry port of protocol TLS or HTTPS
  (the app already speaks TLS there; the sidecar would wrap it in a second TLS layer).
  TLS origination is for ports the app speaks plain HTTP (or TCP) to.
* ``mesh-mtls-replaced``: tls SIMPLE / MUTUAL on a mesh service: it replaces mesh mTLS to
  that service (as in Istio), so its sidecars must accept that TLS (they expect mesh
  certificates), and the client's identity no longer reaches AuthorizationPolicies.
* ``failover-without-outlier-detection``: locality failover / failoverPriority without
  ``outlierDetection``: a failing endpoint is never ejected, so traffic moves to the next
  priority only when endpoints disappear (Istio requires outlierDetection for failover).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from shoal.api.serviceentry import EntryProtocol
from shoal.api.traffic_policy import ClientTLSSettings, TrafficPolicy
from shoal.registry.external import external_host
from shoal.registry.snapshot import MeshSnapshot

if TYPE_CHECKING:
    from shoal.analyze.finding import Finding

_TLS_PROTOCOLS = (EntryProtocol.TLS, EntryProtocol.HTTPS)


def _policies(spec: object) -> Iterator[tuple[str, TrafficPolicy]]:
    """(path, policy) of the top-level and every subset's traffic policy."""
    top = getattr(spec, "traffic_policy", None)
    if top is not None:
        yield "spec.trafficPolicy", top
    for i, subset in enumerate(getattr(spec, "subsets", [])):
        if subset.traffic_policy is not None:
            yield f"spec.subsets[{i}].trafficPolicy", subset.traffic_policy


def _tls_settings(path: str, policy: TrafficPolicy
                  ) -> Iterator[tuple[str, ClientTLSSettings, int | None]]:
    """(path, tls, port or None for every port) of one policy and its port levels."""
    if policy.tls is not None:
        yield f"{path}.tls", policy.tls, None
    for i, level in enumerate(policy.port_level_settings):
        if level.tls is not None:
            yield f"{path}.portLevelSettings[{i}].tls", level.tls, level.port.number


def _entry_protocols(mesh: MeshSnapshot, host: str) -> dict[int, EntryProtocol]:
    for entry in mesh.of_kind("ServiceEntry"):
        if host in entry.spec.hosts:
            return {p.number: p.protocol for p in entry.spec.ports}
    return {}


def destination_rule_policies(mesh: MeshSnapshot) -> Iterator[Finding]:
    from shoal.analyze.finding import Finding

    for dr in mesh.of_kind("DestinationRule"):
        service = mesh.resolve_host(dr.spec.host, dr.metadata.namespace)
        if service is None:
            continue  # reported as host-not-found
        who = str(dr.key)
        host = external_host(service)
        protocols = _entry_protocols(mesh, host) if host else {}
        for path, policy in _policies(dr.spec):
            for tls_path, tls, port in _tls_settings(path, policy):
                if not tls.originates:
                    continue
                if host is None:
                    yield Finding("mesh-mtls-replaced", who, f"{tls_path}.mode",
                                  f"tls {tls.mode.value} replaces mesh mTLS to "
                                  f"{mesh.fqdn(service)}: its sidecars expect mesh "
                                  "certificates, and AuthorizationPolicies no longer see "
                                  "the caller's identity")
                    continue
                ports = [port] if port is not None else sorted(protocols)
                for number in ports:
                    if protocols.get(number) in _TLS_PROTOCOLS:
                        yield Finding("double-tls", who, f"{tls_path}.mode",
                                      f"port {number} of {host} is "
                                      f"{protocols[number].value}: the app already speaks "
                                      f"TLS there and tls {tls.mode.value} would add a "
                                      "second layer; originate TLS on an HTTP port instead")
            lb = policy.load_balancer
            setting = lb.locality_lb_setting if lb is not None else None
            if (setting is not None and setting.is_enabled
                    and (setting.failover or setting.failover_priority)
                    and policy.outlier_detection is None
                    and not any(lv.outlier_detection for lv in policy.port_level_settings)
                    and (path == "spec.trafficPolicy" or dr.spec.traffic_policy is None
                         or dr.spec.traffic_policy.outlier_detection is None)):
                yield Finding("failover-without-outlier-detection", who,
                              f"{path}.loadBalancer.localityLbSetting",
                              "failover needs outlierDetection to notice failing "
                              "endpoints; without it traffic moves only when endpoints "
                              "are removed")
