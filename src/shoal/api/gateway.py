"""Istio's Gateway (networking.istio.io): the listeners of an ingress gateway workload.

Servers bind ports on the gateway workloads the selector picks (``shoal gateway run``);
their routes come from VirtualServices that name the gateway in ``gateways``. TLS
``credentialName`` names a certificate the gateway was started with
(``shoal gateway run --credential NAME=CERT,KEY[,CA]``); MUTUAL and OPTIONAL_MUTUAL verify
client certificates against that credential's CA. AUTO_PASSTHROUGH (the east-west gateway
of multi-cluster) routes mesh mTLS by the SNI client sidecars send, without a
VirtualService and without terminating it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model, Resource
from shoal.api.selector import selects
from shoal.api.types import NotSupported


class ServerProtocol(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"


class TlsMode(StrEnum):
    SIMPLE = "SIMPLE"  # terminate with credentialName
    MUTUAL = "MUTUAL"  # ... and require a client certificate from its CA
    OPTIONAL_MUTUAL = "OPTIONAL_MUTUAL"  # ... verify one if the client presents it
    ISTIO_MUTUAL = "ISTIO_MUTUAL"  # terminate mesh mTLS with the gateway's own SVID
    PASSTHROUGH = "PASSTHROUGH"  # route by SNI (VirtualService tls), do not terminate
    AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"  # route mesh mTLS by its outbound_ SNI


# Modes that terminate TLS with the gateway's own certificate (credentialName).
CREDENTIAL_MODES = (TlsMode.SIMPLE, TlsMode.MUTUAL, TlsMode.OPTIONAL_MUTUAL)
# Modes that verify client certificates (subjectAltNames allowed).
CLIENT_CERT_MODES = (TlsMode.MUTUAL, TlsMode.OPTIONAL_MUTUAL, TlsMode.ISTIO_MUTUAL)
PASSTHROUGH_MODES = (TlsMode.PASSTHROUGH, TlsMode.AUTO_PASSTHROUGH)


def ca_secret(credential: str) -> str:
    """Name of the CA (validation) secret that goes with ``credential`` (Istio's
    ``<credentialName>-cacert`` convention)."""
    return f"{credential}-cacert"


class ServerPort(Model):
    number: int = Field(ge=1, le=65535)
    name: str = Field(min_length=1)
    protocol: ServerProtocol
    target_port: NotSupported = None


class ServerTLSSettings(Model):
    mode: TlsMode = TlsMode.SIMPLE
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    https_redirect: NotSupported = None
    server_certificate: NotSupported = None
    private_key: NotSupported = None
    ca_certificates: NotSupported = None
    credential_names: NotSupported = None
    verify_certificate_spki: NotSupported = None
    verify_certificate_hash: NotSupported = None
    min_protocol_version: NotSupported = None
    max_protocol_version: NotSupported = None
    cipher_suites: NotSupported = None

    @field_validator("subject_alt_names")
    @classmethod
    def _sans(cls, v: list[str]) -> list[str]:
        for san in v:
            if not san or " " in san:
                raise ValueError(f"subject alt name {san!r} must be a non-empty name or URI")
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> ServerTLSSettings:
        if self.mode in CREDENTIAL_MODES and not self.credential_name:
            raise ValueError(f"tls mode {self.mode} needs credentialName")
        if self.mode not in CREDENTIAL_MODES and self.credential_name:
            raise ValueError(f"credentialName is not used by tls mode {self.mode} (only by "
                             "SIMPLE, MUTUAL, OPTIONAL_MUTUAL)")
        if self.subject_alt_names and self.mode not in CLIENT_CERT_MODES:
            raise ValueError(f"subjectAltNames checks client certificates: not with tls mode "
                             f"{self.mode} (MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL)")
        return self


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
            mode = self.tls.mode
            if proto is ServerProtocol.HTTPS and mode in PASSTHROUGH_MODES:
                raise ValueError(f"HTTPS with {mode}: use protocol TLS")
            if proto is ServerProtocol.TLS and mode not in PASSTHROUGH_MODES:
                raise ValueError(f"a TLS server with tls mode {mode}: shoal passes TLS "
                                 "through only (PASSTHROUGH, AUTO_PASSTHROUGH); use HTTPS to "
                                 "terminate it")
        elif self.tls is not None:
            raise ValueError(f"tls is only for HTTPS and TLS servers, not {proto}")
        for h in self.hosts:
            if "/" in h:
                raise ValueError(f"host {h!r}: namespace-qualified hosts are not supported "
                                 "by shoal yet")
        return self

    @property
    def mode(self) -> TlsMode | None:
        return self.tls.mode if self.tls is not None else None


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


def gateway_ports(workload: Resource) -> set[int]:
    """Ports a gateway workload may bind (its ``gateway-ports`` annotation)."""
    text = workload.metadata.annotations.get(PORTS_ANNOTATION, "")
    return {int(p) for p in text.split(",") if p.strip().isdigit()}


def auto_passthrough_ports(workload: Resource, gateways: Iterable[Resource]) -> list[int]:
    """Ports on which gateway ``workload`` has an AUTO_PASSTHROUGH server (it was started
    with the port and one of ``gateways`` selects it with such a server there), sorted."""
    if GATEWAY_ANNOTATION not in workload.metadata.annotations:
        return []
    allowed = gateway_ports(workload)
    labels = workload.spec.labels
    out: set[int] = set()
    for gw in gateways:
        spec: GatewaySpec = gw.spec
        if selects(spec.selector, labels):
            out.update(s.port.number for s in spec.servers
                       if s.mode is TlsMode.AUTO_PASSTHROUGH and s.port.number in allowed)
    return sorted(out)
