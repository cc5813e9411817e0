"""Istio's security kinds (security.istio.io): PeerAuthentication, AuthorizationPolicy and
RequestAuthentication.

Shapes follow Istio so existing files apply unchanged. Fields shoal does not implement
are ``NotSupported`` (an error naming the field). What each kind means for traffic is in
docs/security.md; the Envoy side is in :mod:`shoal.security.authn`, ``rbac`` and ``jwt``.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model
from shoal.api.types import NotSupported


class WorkloadSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)

    _labels = field_validator("match_labels")(classmethod(lambda cls, v: check_labels(v)))


class MtlsMode(StrEnum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class PeerMtls(Model):
    mode: MtlsMode = MtlsMode.UNSET


class PeerAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    mtls: PeerMtls | None = None
    port_level_mtls: dict[int, PeerMtls] = Field(default_factory=dict)

    @field_validator("port_level_mtls")
    @classmethod
    def _ports(cls, v: dict[int, PeerMtls]) -> dict[int, PeerMtls]:
        for port in v:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not in 1..65535")
        return v

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> PeerAuthenticationSpec:
        if self.port_level_mtls and self.selector is None:
            raise ValueError("portLevelMtls needs a selector (as in Istio)")
        return self


# -- AuthorizationPolicy ----------------------------------------------------------------------


def check_wildcard(v: str) -> str:
    """Istio's matching: exact, prefix ``abc*``, suffix ``*abc`` or presence ``*``."""
    if not v:
        raise ValueError("empty value")
    if "*" in v.strip("*") or (v.startswith("*") and v.endswith("*") and v != "*"):
        raise ValueError(f"{v!r}: '*' is only allowed at the start or the end")
    return v


def _wildcards(v: list[str]) -> list[str]:
    for item in v:
        check_wildcard(item)
    return v


def _cidrs(v: list[str]) -> list[str]:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
    return v


def _ports(v: list[str]) -> list[str]:
    for item in v:
        if not str(item).isdigit() or not 1 <= int(item) <= 65535:
            raise ValueError(f"{item!r} is not a port number")
    return [str(p) for p in v]


def _paths(v: list[str]) -> list[str]:
    for item in _wildcards(v):
        if "{*}" in item or "{**}" in item:
            raise ValueError(f"{item!r}: path templates are not supported")
    return v


class Source(Model):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)
    service_accounts: NotSupported = None
    not_service_accounts: NotSupported = None

    _w = field_validator("principals", "not_principals", "request_principals",
                         "not_request_principals", "namespaces", "not_namespaces")(
        classmethod(lambda cls, v: _wildcards(v)))
    _c = field_validator("ip_blocks", "not_ip_blocks", "remote_ip_blocks",
                         "not_remote_ip_blocks")(classmethod(lambda cls, v: _cidrs(v)))


class Operation(Model):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)

    _w = field_validator("hosts", "not_hosts", "methods", "not_methods")(
        classmethod(lambda cls, v: _wildcards(v)))
    _p = field_validator("ports", "not_ports", mode="before")(
        classmethod(lambda cls, v: _ports(v)))
    _paths = field_validator("paths", "not_paths")(classmethod(lambda cls, v: _paths(v)))

    @property
    def http_only(self) -> list[str]:
        """Set fields that only mean something for HTTP."""
        return [f for f in ("hosts", "not_hosts", "methods", "not_methods", "paths",
                            "not_paths") if getattr(self, f)]


class From(Model):
    source: Source


class To(Model):
    operation: Operation


# key -> (takes a [name] part, HTTP only)
CONDITION_KEYS: dict[str, tuple[bool, bool]] = {
    "request.headers": (True, True),
    "source.ip": (False, False),
    "remote.ip": (False, False),
    "source.namespace": (False, False),
    "source.principal": (False, False),
    "request.auth.principal": (False, True),
    "request.auth.audiences": (False, True),
    "request.auth.presenter": (False, True),
    "request.auth.claims": (True, True),
    "destination.port": (False, False),
}
_KEY = re.compile(r"^([a-z.]+)((?:\[[^\[\]]+\])*)$")


def parse_condition_key(key: str) -> tuple[str, list[str]]:
    """``request.auth.claims[a][b]`` -> ("request.auth.claims", ["a", "b"])."""
    m = _KEY.match(key)
    if not m or m.group(1) not in CONDITION_KEYS:
        raise ValueError(f"unsupported key {key!r} (supported: {', '.join(CONDITION_KEYS)})")
    name, parts = m.group(1), re.findall(r"\[([^\[\]]+)\]", m.group(2))
    takes_name = CONDITION_KEYS[name][0]
    if (takes_name and not parts) or (not takes_name and parts):
        raise ValueError(f"key {key!r}: {name} " + ("needs a [name]" if takes_name
                                                     else "takes no [name]"))
    if name == "request.headers" and len(parts) != 1:
        raise ValueError(f"key {key!r}: exactly one header name")
    return name, parts


class Condition(Model):
    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Condition:
        name, _ = parse_condition_key(self.key)
        if not self.values and not self.not_values:
            raise ValueError("one of values or notValues is required")
        if name in ("source.ip", "remote.ip"):
            _cidrs(self.values + self.not_values)
        elif name == "destination.port":
            _ports(self.values + self.not_values)
        else:
            _wildcards(self.values + self.not_values)
        return self

    @property
    def http_only(self) -> bool:
        return CONDITION_KEYS[parse_condition_key(self.key)[0]][1]


class Rule(Model):
    from_: list[From] = Field(default_factory=list, alias="from")
    to: list[To] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)

    def http_only_fields(self) -> list[str]:
        out: list[str] = []
        for f in self.from_:
            if f.source.request_principals or f.source.not_request_principals:
                out.append("requestPrincipals")
        for t in self.to:
            out += t.operation.http_only
        out += [c.key for c in self.when if c.http_only]
        return out


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


class ExtensionProviderRef(Model):
    """``provider`` of a CUSTOM policy: an ``extensionProviders`` entry of the mesh config
    (``shoal control-plane --mesh-config``, docs/adr/0033)."""

    name: str = Field(min_length=1, max_length=253)


class AuthorizationPolicySpec(Model):
    selector: WorkloadSelector | None = None
    action: Action = Action.ALLOW
    rules: list[Rule] = Field(default_factory=list)
    provider: ExtensionProviderRef | None = None
    target_ref: NotSupported = None
    target_refs: NotSupported = None

    @model_validator(mode="after")
    def _provider(self) -> AuthorizationPolicySpec:
        if self.action is Action.CUSTOM and self.provider is None:
            raise ValueError("provider: is required with action CUSTOM (the name of an "
                             "extensionProviders entry of the mesh config)")
        if self.action is not Action.CUSTOM and self.provider is not None:
            raise ValueError("provider: only with action CUSTOM")
        return self


# -- RequestAuthentication --------------------------------------------------------------------


class JwtHeader(Model):
    name: str = Field(min_length=1)
    prefix: str = ""


class ClaimToHeader(Model):
    header: str = Field(min_length=1)
    claim: str = Field(min_length=1)


class JwtRule(Model):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JwtHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    output_payload_to_header: str | None = None
    forward_original_token: bool = False
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    timeout: NotSupported = None

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> JwtRule:
        if (self.jwks is None) == (self.jwks_uri is None):
            raise ValueError("exactly one of jwks or jwksUri must be set")
        return self


class RequestAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    jwt_rules: list[JwtRule] = Field(default_factory=list)
    target_ref: NotSupported = None
    target_refs: NotSupported = None

    @field_validator("jwt_rules")
    @classmethod
    def _issuers(cls, v: list[JwtRule]) -> list[JwtRule]:
        issuers = [r.issuer for r in v]
        dups = sorted({i for i in issuers if issuers.count(i) > 1})
        if dups:
            raise ValueError(f"duplicate issuer(s) {dups}")
        return v
