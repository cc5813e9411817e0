"""DestinationRule ``trafficPolicy`` (top level, per subset, per port), Istio shapes.

What shoal implements: load balancing (simple, consistent hash, locality failover,
failoverPriority and distribute), connection pool limits, outlier detection and client TLS
(DISABLE, ISTIO_MUTUAL, and TLS origination: SIMPLE / MUTUAL with certificate files on the
proxy's host, served to Envoy by its agent over SDS: docs/adr/0013). The rest is rejected by
name (``NotSupported``) so a policy never half-applies.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import PurePosixPath

from pydantic import Field, field_validator, model_validator

from shoal.api.meta import Model
from shoal.api.types import Duration, NotSupported


class SimpleLB(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    LEAST_CONN = "LEAST_CONN"  # Istio's deprecated alias of LEAST_REQUEST
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"


class HTTPCookie(Model):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None
    attributes: NotSupported = None


class RingHash(Model):
    minimum_ring_size: int = Field(default=1024, ge=1, le=8388608)


class Maglev(Model):
    table_size: int = Field(default=65537, ge=1)


class ConsistentHash(Model):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    minimum_ring_size: int | None = Field(default=None, ge=1)  # deprecated: ringHash
    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        keys = [self.http_header_name, self.http_cookie, self.use_source_ip or None,
                self.http_query_parameter_name]
        if sum(k is not None for k in keys) != 1:
            raise ValueError("exactly one of httpHeaderName, httpCookie, useSourceIp or "
                             "httpQueryParameterName must be set")
        if self.ring_hash is not None and self.maglev is not None:
            raise ValueError("set ringHash or maglev, not both")
        return self


def _locality_parts(text: str, what: str, *, wildcard: bool) -> list[str]:
    parts = text.split("/")
    if not text or len(parts) > 3 or any(not p for p in parts):
        raise ValueError(f"{what} {text!r}: expected region[/zone[/subzone]]")
    if wildcard and "*" in parts[:-1]:
        raise ValueError(f"{what} {text!r}: '*' may only be the last part")
    if not wildcard and "*" in parts:
        raise ValueError(f"{what} {text!r}: '*' is not allowed here")
    return parts


# Labels every endpoint and client has, derived from its locality (Istio's well-known
# topology labels; topology.istio.io/network and /cluster come from workload labels).
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
LOCALITY_LABELS = (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _priority_label(item: str) -> str:
    """The key of a failoverPriority entry ``key`` or ``key=value`` (validated)."""
    key, sep, value = item.partition("=")
    if not key or not _LABEL_KEY.match(key) or len(key) > 317:
        raise ValueError(f"{item!r}: expected a label key, or key=value")
    if sep and "=" in value:
        raise ValueError(f"{item!r}: expected a label key, or key=value")
    return key


class LocalityLbDistribute(Model):
    """Traffic from clients in locality ``from`` is split over localities ``to``
    (patterns ``region[/zone[/subzone]]``, ``*`` as the last part), weights sum to 100."""

    from_: str = Field(alias="from")
    to: dict[str, int] = Field(min_length=1)

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        _locality_parts(v, "locality", wildcard=True)
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: dict[str, int]) -> dict[str, int]:
        for loc, weight in v.items():
            _locality_parts(loc, "locality", wildcard=True)
            if not 1 <= weight <= 100:
                raise ValueError(f"weight of {loc!r}: {weight} is not in 1..100")
        if sum(v.values()) != 100:
            raise ValueError(f"weights must sum to 100, not {sum(v.values())}")
        return v


class LocalityLbFailover(Model):
    """When the endpoints of the client's region ``from`` are unhealthy, use region ``to``."""

    from_: str = Field(alias="from")
    to: str

    @model_validator(mode="after")
    def _regions(self) -> LocalityLbFailover:
        for text in (self.from_, self.to):
            if len(_locality_parts(text, "region", wildcard=False)) != 1:
                raise ValueError(f"failover is between regions; {text!r} is not a region")
        if self.from_ == self.to:
            raise ValueError("failover 'from' and 'to' must differ")
        return self


class LocalityLbSetting(Model):
    """Istio's locality load balancing (see xds.generate.locality). Present and not
    ``enabled: false`` means on."""

    enabled: bool | None = None
    distribute: list[LocalityLbDistribute] = Field(default_factory=list)
    failover: list[LocalityLbFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)

    @field_validator("failover_priority")
    @classmethod
    def _priority_labels(cls, v: list[str]) -> list[str]:
        keys = [_priority_label(item) for item in v]
        if len(set(keys)) != len(keys):
            raise ValueError("a label key appears twice")
        return v

    @model_validator(mode="after")
    def _check(self) -> LocalityLbSetting:
        if self.distribute and self.failover:
            raise ValueError("set distribute or failover, not both")
        if self.distribute and self.failover_priority:
            raise ValueError("set distribute or failoverPriority, not both (distribute "
                             "would win and failoverPriority do nothing)")
        if self.failover:  # Istio: region/zone/subzone priorities fight the failover
            clash = [k for k in self.priority_keys if k in LOCALITY_LABELS]
            if clash:
                raise ValueError(f"failover cannot be combined with the locality label "
                                 f"{clash[0]!r} in failoverPriority")
        froms = [d.from_ for d in self.distribute]
        if len(set(froms)) != len(froms):
            raise ValueError("duplicate 'from' locality in distribute")
        return self

    @property
    def is_enabled(self) -> bool:
        return self.enabled is not False

    @property
    def priority_keys(self) -> list[str]:
        """The label keys of failoverPriority, in order."""
        return [_priority_label(item) for item in self.failover_priority]

    def priority_labels(self) -> list[tuple[str, str | None]]:
        """failoverPriority as (key, value): value None = compare with the client's label,
        a value (``key=value``) = compare with that value."""
        out: list[tuple[str, str | None]] = []
        for item in self.failover_priority:
            key, sep, value = item.partition("=")
            out.append((key, value if sep else None))
        return out


class LoadBalancerSettings(Model):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup_duration_secs: NotSupported = None
    warmup: NotSupported = None

    @model_validator(mode="after")
    def _check(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set simple or consistentHash, not both")
        if self.simple is SimpleLB.PASSTHROUGH:
            raise ValueError("simple: PASSTHROUGH is not supported by shoal (endpoints are "
                             "always known to the mesh)")
        return self


class TcpKeepalive(Model):
    probes: int | None = Field(default=None, ge=1)
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    max_connections: int | None = Field(default=None, ge=1)
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: NotSupported = None


class H2UpgradePolicy(StrEnum):
    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


class HTTPSettings(Model):
    http1_max_pending_requests: int | None = Field(default=None, ge=1)
    http2_max_requests: int | None = Field(default=None, ge=1)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None
    h2_upgrade_policy: H2UpgradePolicy | None = None
    max_concurrent_streams: NotSupported = None
    use_client_protocol: NotSupported = None


class ConnectionPoolSettings(Model):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    consecutive_5xx_errors: int | None = Field(default=None, ge=0,
                                               alias="consecutive5xxErrors")
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    consecutive_errors: NotSupported = None  # removed from Istio; use consecutive5xxErrors
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int = Field(default=0, ge=0, le=100)


class TLSMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


def _file_path(v: str | None) -> str | None:
    """A certificate file on the proxy's host: absolute, and usable in an SDS name."""
    if v is None:
        return v
    if not v or not PurePosixPath(v).is_absolute():
        raise ValueError(f"{v!r} must be an absolute file path (on the proxy's host)")
    if "~" in v or any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError(f"{v!r}: '~', spaces and control characters are not allowed")
    return v


class ClientTLSSettings(Model):
    """TLS from the sidecar to the destination. ``ISTIO_MUTUAL``: mesh mTLS (as auto mTLS);
    ``SIMPLE`` / ``MUTUAL``: TLS origination (the app speaks plaintext, the sidecar TLS),
    with certificate files read on the proxy's host by its agent; ``DISABLE``: plaintext."""

    mode: TLSMode = TLSMode.DISABLE
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None

    _paths = field_validator("client_certificate", "private_key", "ca_certificates",
                             "ca_crl")(classmethod(lambda cls, v: _file_path(v)))

    @field_validator("credential_name")
    @classmethod
    def _credential(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("credentialName (a secret held by a gateway) is not supported "
                             "in a DestinationRule: give clientCertificate, privateKey and "
                             "caCertificates as file paths on the proxy's host")
        return v

    @field_validator("sni")
    @classmethod
    def _sni(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 255 or any(
                c.isspace() or not c.isprintable() for c in v)):
            raise ValueError(f"{v!r} is not a server name")
        return v

    @field_validator("subject_alt_names")
    @classmethod
    def _sans(cls, v: list[str]) -> list[str]:
        for san in v:
            if not san or any(c.isspace() for c in san):
                raise ValueError(f"{san!r} is not a subject alternative name")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ClientTLSSettings:
        origination = self.mode in (TLSMode.SIMPLE, TLSMode.MUTUAL)
        set_ = [name for name, value in (
            ("clientCertificate", self.client_certificate), ("privateKey", self.private_key),
            ("caCertificates", self.ca_certificates), ("caCrl", self.ca_crl),
            ("subjectAltNames", self.subject_alt_names or None), ("sni", self.sni),
            ("insecureSkipVerify", self.insecure_skip_verify or None)) if value is not None]
        if not origination:
            if set_:
                raise ValueError(f"{', '.join(set_)}: only used with mode SIMPLE or MUTUAL, "
                                 f"not {self.mode.value}")
            return self
        if self.mode is TLSMode.MUTUAL:
            missing = [n for n, v in (("clientCertificate", self.client_certificate),
                                      ("privateKey", self.private_key)) if v is None]
            if missing:
                raise ValueError(f"mode MUTUAL needs {' and '.join(missing)} (the client "
                                 "certificate the sidecar presents)")
        elif self.client_certificate is not None or self.private_key is not None:
            raise ValueError("clientCertificate and privateKey are only used with mode "
                             "MUTUAL (SIMPLE presents no client certificate)")
        if self.insecure_skip_verify:
            clash = [n for n in ("caCertificates", "caCrl", "subjectAltNames") if n in set_]
            if clash:
                raise ValueError(f"insecureSkipVerify turns off the server certificate "
                                 f"check that {', '.join(clash)} configure; set one or the "
                                 "other")
        return self

    @property
    def originates(self) -> bool:
        """TLS origination (SIMPLE or MUTUAL)?"""
        return self.mode in (TLSMode.SIMPLE, TLSMode.MUTUAL)


class PortSelector(Model):
    number: int = Field(ge=1, le=65535)


class PortTrafficPolicy(Model):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Model):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: NotSupported = None
    proxy_protocol: NotSupported = None
    retry_budget: NotSupported = None

    @field_validator("port_level_settings")
    @classmethod
    def _unique_ports(cls, v: list[PortTrafficPolicy]) -> list[PortTrafficPolicy]:
        ports = [p.port.number for p in v]
        if len(set(ports)) != len(ports):
            raise ValueError("duplicate port in portLevelSettings")
        return v

    def for_port(self, port: int) -> TrafficPolicy:
        """This policy with the portLevelSettings of ``port`` applied (field by field)."""
        level = next((p for p in self.port_level_settings if p.port.number == port), None)
        base = self.model_copy(update={"port_level_settings": []})
        if level is None:
            return base
        return base.model_copy(update={
            f: getattr(level, f) for f in ("load_balancer", "connection_pool",
                                           "outlier_detection", "tls")
            if getattr(level, f) is not None})


def merge(top: TrafficPolicy | None, subset: TrafficPolicy | None, port: int
          ) -> TrafficPolicy | None:
    """Istio's merge: the subset's fields override the top level's, each first resolved
    for ``port``; ``None`` when neither sets anything."""
    if top is None and subset is None:
        return None
    base = top.for_port(port) if top is not None else TrafficPolicy()
    if subset is None:
        return base
    over = subset.for_port(port)
    return base.model_copy(update={
        f: getattr(over, f) for f in ("load_balancer", "connection_pool",
                                      "outlier_detection", "tls")
        if getattr(over, f) is not None})
