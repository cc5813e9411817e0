"""Istio's networking kinds (networking.istio.io): VirtualService and DestinationRule.

Field names and shapes follow Istio so that existing files apply unchanged. Fields that
Istio has and shoal does not implement yet are declared ``NotSupported``: setting one is
a validation error that names it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from shoal.api.http_route import (
    CorsPolicy,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    Percent,
)
from shoal.api.mesh import check_labels
from shoal.api.meta import DNS_LABEL, DNS_SUBDOMAIN, Model
from shoal.api.traffic_policy import PortSelector, TrafficPolicy
from shoal.api.types import Duration, NotSupported, StringMatch

__all__ = ["PortSelector", "TrafficPolicy"]


def _mesh_only(v: list[str]) -> list[str]:
    """``mesh`` (the sidecars) or a Gateway as ``name`` / ``namespace/name``."""
    for g in v:
        ns, _, name = g.rpartition("/")
        if g != "mesh" and not (DNS_SUBDOMAIN.match(name) and (not ns or DNS_LABEL.match(ns))):
            raise ValueError(f"gateway {g!r} must be 'mesh' or [namespace/]name")
    return v


def for_mesh(gateways: list[str]) -> bool:
    """Do rules with these ``gateways`` apply to sidecars? (empty means ``mesh``)"""
    return not gateways or "mesh" in gateways


class Destination(Model):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class HTTPRouteDestination(Model):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)
    headers: Headers | None = None


class HTTPMirrorPolicy(Model):
    destination: Destination
    percentage: Percent | None = None


class HTTPMatchRequest(Model):
    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    port: int | None = Field(default=None, ge=1, le=65535)
    scheme: NotSupported = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    # the rule applies only to sidecars in this namespace (Istio's sourceNamespace)
    source_namespace: str | None = None
    gateways: list[str] = Field(default_factory=list)
    stat_prefix: NotSupported = None

    @field_validator("source_namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v is not None and not (DNS_LABEL.match(v) and len(v) <= 63):
            raise ValueError("must be a namespace name")
        return v

    _gateways = field_validator("gateways")(classmethod(lambda cls, v: _mesh_only(v)))
    _source = field_validator("source_labels")(classmethod(lambda cls, v: check_labels(v)))

    @field_validator("headers", "without_headers")
    @classmethod
    def _header_names(cls, v: dict[str, StringMatch]) -> dict[str, StringMatch]:
        for name in v:
            if not name or name != name.lower():
                raise ValueError(f"header name {name!r} must be non-empty and lowercase")
        return v


class HTTPRoute(Model):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    timeout: Duration | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: NotSupported = None
    rewrite: HTTPRewrite | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @field_validator("route")
    @classmethod
    def _weights(cls, v: list[HTTPRouteDestination]) -> list[HTTPRouteDestination]:
        return check_weights(v)

    @model_validator(mode="after")
    def _action(self) -> HTTPRoute:
        actions = [n for n, v in (("route", self.route), ("redirect", self.redirect),
                                  ("directResponse", self.direct_response)) if v]
        if len(actions) != 1:
            raise ValueError("exactly one of route, redirect or directResponse must be set"
                             + (f" (got {', '.join(actions)})" if actions else ""))
        if self.mirror is not None and self.mirrors:
            raise ValueError("set mirror or mirrors, not both")
        if self.mirror_percentage is not None and self.mirror_percent is not None:
            raise ValueError("set mirrorPercentage or mirrorPercent, not both")
        if self.mirror is None and (self.mirror_percentage or self.mirror_percent is not None):
            raise ValueError("mirrorPercentage needs mirror")
        if not self.route and (self.rewrite or self.mirror or self.mirrors or self.retries
                               or self.timeout):
            raise ValueError("rewrite, retries, timeout and mirrors need route destinations")
        return self


def check_weights(v: list[Any]) -> list[Any]:
    """Destinations of one rule: weights on all of them when there are several, sum 100."""
    if len(v) > 1 or (v and v[0].weight is not None):
        weights = [d.weight or 0 for d in v]
        if len(v) > 1 and any(d.weight is None for d in v):
            raise ValueError("every destination needs a weight when there are several")
        if sum(weights) != 100:
            raise ValueError(f"weights sum to {sum(weights)}; they must sum to 100")
    return v


class RouteDestination(Model):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)


class L4MatchAttributes(Model):
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    destination_subnets: NotSupported = None
    source_namespace: NotSupported = None
    source_subnet: NotSupported = None

    _gateways = field_validator("gateways")(classmethod(lambda cls, v: _mesh_only(v)))
    _source = field_validator("source_labels")(classmethod(lambda cls, v: check_labels(v)))


class TLSMatchAttributes(L4MatchAttributes):
    sni_hosts: list[str] = Field(min_length=1)

    @field_validator("sni_hosts")
    @classmethod
    def _sni(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or " " in h or "*" in h[1:]:
                raise ValueError(f"SNI host {h!r} must be a host name, '*.suffix' or '*'")
        return v


class TCPRoute(Model):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(min_length=1)

    _weights = field_validator("route")(classmethod(lambda cls, v: check_weights(v)))


class TLSRoute(Model):
    match: list[TLSMatchAttributes] = Field(min_length=1)
    route: list[RouteDestination] = Field(min_length=1)

    _weights = field_validator("route")(classmethod(lambda cls, v: check_weights(v)))


class VirtualServiceSpec(Model):
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: NotSupported = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or " " in h:
                raise ValueError(f"host {h!r} must be a service name or FQDN")
        if len(set(v)) != len(v):
            raise ValueError("duplicate host")
        return v

    _gateways = field_validator("gateways")(classmethod(lambda cls, v: _mesh_only(v)))

    @model_validator(mode="after")
    def _wildcards(self) -> VirtualServiceSpec:
        if for_mesh(self.gateways) and any(h.startswith("*") for h in self.hosts):
            raise ValueError("hosts: wildcard hosts are only supported for gateways (set "
                             "gateways without 'mesh')")
        return self


class Subset(Model):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None

    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))


class DestinationRuleSpec(Model):
    host: str = Field(min_length=1)
    subsets: list[Subset] = Field(default_factory=list)
    traffic_policy: TrafficPolicy | None = None
    export_to: NotSupported = None
    workload_selector: NotSupported = None

    @model_validator(mode="after")
    def _unique_subsets(self) -> DestinationRuleSpec:
        names = [s.name for s in self.subsets]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"subsets: duplicate subset name(s) {dups}")
        return self

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)
