"""Istio's Sidecar (networking.istio.io): which services a proxy is told about.

``egress[].hosts`` entries are ``namespace/host``: namespace ``*`` (any), ``.`` (the
Sidecar's own) or a name; host ``*``, ``*.suffix`` or an exact FQDN / ServiceEntry host.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model
from shoal.api.types import NotSupported


class OutboundPolicy(StrEnum):
    REGISTRY_ONLY = "REGISTRY_ONLY"
    ALLOW_ANY = "ALLOW_ANY"


class WorkloadSelector(Model):
    labels: dict[str, str] = Field(min_length=1)

    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))


class OutboundTrafficPolicy(Model):
    mode: OutboundPolicy = OutboundPolicy.REGISTRY_ONLY
    egress_proxy: NotSupported = None


class IstioEgressListener(Model):
    hosts: list[str] = Field(min_length=1)
    port: NotSupported = None
    bind: NotSupported = None
    capture_mode: NotSupported = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            ns, sep, host = h.partition("/")
            if not sep or not ns or not host:
                raise ValueError(f"host {h!r} must be namespace/host (e.g. './*', "
                                 "'istio-system/*', '*/api.example.com')")
            if ns == "~":
                raise ValueError("namespace '~' is not supported by shoal yet")
        return v


class SidecarSpec(Model):
    workload_selector: WorkloadSelector | None = None
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    ingress: NotSupported = None
    inbound_connection_pool: NotSupported = None
