"""shoal's own kinds for the mesh model: Service and Workload (group mesh.shoal.io)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.meta import DNS_LABEL, Model
from shoal.api.types import NotSupported

LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for k, v in labels.items():
        if not LABEL_KEY.match(k) or len(k) > 253:
            raise ValueError(f"invalid label key {k!r}")
        if not LABEL_VALUE.match(v) or len(v) > 63:
            raise ValueError(f"invalid value {v!r} for label {k!r}")
    return labels


class Protocol(StrEnum):
    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"
    TLS = "tls"  # opaque TLS the app terminates: routed by SNI (VirtualService tls)
    HTTPS = "https"  # HTTP over TLS the app terminates: opaque to the mesh, like tls

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)

    @property
    def is_tls(self) -> bool:
        """TLS the mesh does not terminate: sidecars route it by SNI."""
        return self in (Protocol.TLS, Protocol.HTTPS)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC)


class ServicePort(Model):
    name: str
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = Protocol.HTTP
    # Port the selected workloads receive on, when it differs and the workload does not
    # say (Workload.spec.ports). Defaults to ``port``.
    target_port: int | None = Field(default=None, ge=1, le=65535)

    def endpoint_port(self, workload_ports: Mapping[str, int]) -> int:
        """Where a selected workload receives this port (the one rule): the workload's
        own port of this name (``Workload.spec.ports``), else ``target_port``, else
        ``port``."""
        return workload_ports.get(self.name) or self.target_port or self.port

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v) or len(v) > 15:
            raise ValueError("must be a lowercase DNS-1123 label of at most 15 characters")
        return v


class ServiceSpec(Model):
    """A named set of workloads (chosen by label selector) reachable on some ports."""

    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(min_length=1)

    _labels = field_validator("selector")(classmethod(lambda cls, v: check_labels(v)))

    @model_validator(mode="after")
    def _unique_ports(self) -> ServiceSpec:
        names = [p.name for p in self.ports]
        numbers = [p.port for p in self.ports]
        dup_names = {n for n in names if names.count(n) > 1}
        dup_numbers = {n for n in numbers if numbers.count(n) > 1}
        if dup_names:
            raise ValueError(f"ports: duplicate port name(s) {sorted(dup_names)}")
        if dup_numbers:
            raise ValueError(f"ports: duplicate port number(s) {sorted(dup_numbers)}")
        return self

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


class WorkloadSpec(Model):
    """One instance of a service: where it is, what it is labelled, who it runs as."""

    address: str
    labels: dict[str, str] = Field(default_factory=dict)
    # service port name -> port on ``address`` where this workload (its sidecar) receives
    ports: dict[str, int] = Field(default_factory=dict)
    service_account: str = "default"
    # region/zone/subzone, each part optional: "eu-west/eu-west-1a"
    locality: str = ""
    weight: int = Field(default=1, ge=1, le=128)

    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        for name, port in v.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"port {name!r}: {port} is not in 1..65535")
        return v

    @field_validator("service_account")
    @classmethod
    def _sa(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("must be a lowercase DNS-1123 label")
        return v

    @field_validator("locality")
    @classmethod
    def _locality(cls, v: str) -> str:
        if v and (len(v.split("/")) > 3 or any(not part for part in v.split("/"))):
            raise ValueError("must be region[/zone[/subzone]] with no empty part")
        return v


class TokenRevocationSpec(Model):
    """A revoked token (kind TokenRevocation, named by the token's id, in the root
    namespace). Every control plane sharing the store refuses the token from then on;
    ``shoal token revoke ID`` writes it (docs/security.md, "Tokens")."""

    subject: str = ""  # whom the token spoke for, as far as the revoker knows
    expires_at: int = Field(default=0, ge=0)  # when the token would have expired anyway
    reason: str = Field(default="", max_length=1024)


def split_locality(text: str) -> tuple[str, str, str]:
    """``region/zone/subzone`` (any suffix may be missing, as a Workload's ``locality``
    or ``shoal run --locality`` has it) -> (region, zone, subzone), "" for a missing part.
    The one parser of locality text (agents' bootstraps, endpoints, locality matching)."""
    region, zone, subzone = ([*text.split("/"), "", ""] if text else ["", "", ""])[:3]
    return region, zone, subzone


class NamespaceSpec(Model):
    """A Kubernetes ``Namespace`` (``v1``, cluster-scoped): its labels, which Gateway
    listeners select routes' namespaces by (``allowedRoutes.namespaces.selector``); it has
    no fields of its own in shoal (a namespace exists as soon as something is in it)."""

    finalizers: NotSupported = None


# the label every namespace has (as on Kubernetes): its name
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
