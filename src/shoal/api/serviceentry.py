"""Istio's ServiceEntry (networking.istio.io): services outside the registry, by name.

A ServiceEntry adds hosts (``api.example.com``) with ports and, for STATIC / DNS
resolution, endpoints. The registry turns each host into a service of the mesh snapshot
(see :mod:`shoal.registry.external`), so routes, clusters and VirtualServices treat it
like any other service.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import DNS_LABEL, DNS_SUBDOMAIN, Model
from shoal.api.types import NotSupported
from shoal.netaddr import is_ip


class Location(StrEnum):
    MESH_EXTERNAL = "MESH_EXTERNAL"
    MESH_INTERNAL = "MESH_INTERNAL"


class Resolution(StrEnum):
    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"


class EntryProtocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    TCP = "TCP"
    TLS = "TLS"
    HTTPS = "HTTPS"


class EntryPort(Model):
    number: int = Field(ge=1, le=65535)
    name: str = Field(min_length=1)
    protocol: EntryProtocol = EntryProtocol.TCP
    target_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v.lower()) or len(v) > 63:
            raise ValueError("must be a DNS-1123 label")
        return v


class WorkloadEntry(Model):
    address: str = Field(min_length=1)
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    locality: str = ""
    weight: int = Field(default=1, ge=1, le=128)
    network: NotSupported = None
    service_account: NotSupported = None

    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        for name, port in v.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"port {name!r}: {port} is not in 1..65535")
        return v



class ServiceEntrySpec(Model):
    hosts: list[str] = Field(min_length=1)
    addresses: NotSupported = None
    ports: list[EntryPort] = Field(min_length=1)
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution = Resolution.NONE
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: NotSupported = None
    export_to: NotSupported = None
    subject_alt_names: NotSupported = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not DNS_SUBDOMAIN.match(h.lower()):
                raise ValueError(f"host {h!r} must be a DNS name (wildcards are not "
                                 "supported by shoal yet)")
        if len({h.lower() for h in v}) != len(v):
            raise ValueError("duplicate host")
        return [h.lower() for h in v]

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntrySpec:
        names = [p.name for p in self.ports]
        numbers = [p.number for p in self.ports]
        if len(set(names)) != len(names) or len(set(numbers)) != len(numbers):
            raise ValueError("ports: names and numbers must be unique")
        if self.resolution is Resolution.STATIC:
            if not self.endpoints:
                raise ValueError("resolution STATIC needs endpoints")
            bad = [e.address for e in self.endpoints if not is_ip(e.address)]
            if bad:
                raise ValueError(f"resolution STATIC needs IP endpoint addresses, got {bad}")
        if self.resolution is Resolution.NONE and self.endpoints:
            raise ValueError("resolution NONE takes no endpoints")
        for e in self.endpoints:
            unknown = sorted(set(e.ports) - set(names))
            if unknown:
                raise ValueError(f"endpoint {e.address}: ports {unknown} are not named in "
                                 "ports[]")
        return self
