"""Istio's Gateway (networking.istio.io): the listeners of an ingress gateway workload.

Servers bind ports on the gateway workloads the selector picks (``shoal gateway run``);
their routes come from VirtualServices that name the gateway in ``gateways``. TLS
``credentialName`` names a certificate the gateway was started with
(``shoal gateway run --cert FILE --key FILE --credential-name NAME``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model
from shoal.api.types import NotSupported


class ServerProtocol(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"


class TlsMode(StrEnum):
    SIMPLE = "SIMPLE"
    PASSTHROUGH = "PASSTHROUGH"


class ServerPort(Model):
    number: int = Field(ge=1, le=65535)
    name: str = Field(min_length=1)
    protocol: ServerProtocol
    target_port: NotSupported = None


class ServerTLSSettings(Model):
    mode: TlsMode = TlsMode.SIMPLE
    credential_name: str | None = None
    https_redirect: NotSupported = None
    server_certificate: NotSupported = None
    private_key: NotSupported = None
    ca_certificates: NotSupported = None
    subject_alt_names: NotSupported = None
    min_protocol_version: NotSupported = None
    max_protocol_version: NotSupported = None
    cipher_suites: NotSupported = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: object) -> object:
        if v in ("MUTUAL", "ISTIO_MUTUAL", "AUTO_PASSTHROUGH", "OPTIONAL_MUTUAL"):
            raise ValueError(f"tls mode {v} is not supported by shoal yet (SIMPLE, "
                             "PASSTHROUGH)")
        return v


class Server(Model):
    port: ServerPort
    hosts: list[str] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    name: str | None = None
    bind: NotSupported = None
    default_endpoint: NotSupported = None

    @model_validator(mode="after")
    def _tls(self) -> Server:
        proto = self.port.protocol
        if proto in (ServerProtocol.HTTPS, ServerProtocol.TLS):
            if self.tls is None:
                raise ValueError(f"a {proto} server needs tls")
            if self.tls.mode is TlsMode.SIMPLE and not self.tls.credential_name:
                raise ValueError("tls mode SIMPLE needs credentialName")
            if proto is ServerProtocol.HTTPS and self.tls.mode is TlsMode.PASSTHROUGH:
                raise ValueError("HTTPS with PASSTHROUGH: use protocol TLS")
        elif self.tls is not None:
            raise ValueError(f"tls is only for HTTPS and TLS servers, not {proto}")
        for h in self.hosts:
            if "/" in h:
                raise ValueError(f"host {h!r}: namespace-qualified hosts are not supported "
                                 "by shoal yet")
        return self


class GatewaySpec(Model):
    selector: dict[str, str] = Field(min_length=1)
    servers: list[Server] = Field(min_length=1)

    _labels = field_validator("selector")(classmethod(lambda cls, v: check_labels(v)))

    @model_validator(mode="after")
    def _ports(self) -> GatewaySpec:
        seen: dict[int, ServerProtocol] = {}
        for s in self.servers:
            p = seen.setdefault(s.port.number, s.port.protocol)
            if p is not s.port.protocol:
                raise ValueError(f"port {s.port.number} is used with protocols {p} and "
                                 f"{s.port.protocol}")
        return self


# Annotations of the Workload a gateway (``shoal gateway run``) registers: what the
# control plane needs to know about it.
GATEWAY_ANNOTATION = "networking.shoal.io/gateway"  # the gateway's name: it is a gateway
PORTS_ANNOTATION = "networking.shoal.io/gateway-ports"  # "8080,8443": ports it may bind
CREDENTIALS_ANNOTATION = "networking.shoal.io/gateway-credentials"  # "name,name"


def gateway_ref(ref: str, namespace: str) -> str:
    """A VirtualService's gateway reference as ``namespace/name``."""
    return ref if "/" in ref or ref == "mesh" else f"{namespace}/{ref}"


def host_matches(pattern: str, host: str) -> bool:
    """Gateway server host vs VirtualService host (either may be a ``*`` wildcard)."""
    if pattern == "*" or host == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) or host == pattern
    if host.startswith("*."):
        return pattern.endswith(host[1:])
    return pattern == host
