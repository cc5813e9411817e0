"""Istio's networking kinds (networking.istio.io): VirtualService and DestinationRule.

Field names and shapes follow Istio so that existing files apply unchanged. Fields that
Istio has and shoal does not implement yet are declared ``NotSupported``: setting one is
a validation error that names it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model
from shoal.api.types import Duration, NotSupported, StringMatch


class PortSelector(Model):
    number: int = Field(ge=1, le=65535)


class Destination(Model):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class HTTPRouteDestination(Model):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)
    headers: NotSupported = None


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
    source_labels: NotSupported = None
    source_namespace: NotSupported = None
    gateways: NotSupported = None
    stat_prefix: NotSupported = None

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
    redirect: NotSupported = None
    direct_response: NotSupported = None
    delegate: NotSupported = None
    rewrite: NotSupported = None
    retries: NotSupported = None
    fault: NotSupported = None
    mirror: NotSupported = None
    mirrors: NotSupported = None
    mirror_percentage: NotSupported = None
    mirror_percent: NotSupported = None
    cors_policy: NotSupported = None
    headers: NotSupported = None

    @field_validator("route")
    @classmethod
    def _weights(cls, v: list[HTTPRouteDestination]) -> list[HTTPRouteDestination]:
        if not v:
            raise ValueError("at least one destination is required")
        if len(v) > 1 or v[0].weight is not None:
            weights = [d.weight or 0 for d in v]
            if len(v) > 1 and any(d.weight is None for d in v):
                raise ValueError("every destination needs a weight when there are several")
            if sum(weights) != 100:
                raise ValueError(f"weights sum to {sum(weights)}; they must sum to 100")
        return v


class VirtualServiceSpec(Model):
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: NotSupported = None
    tcp: NotSupported = None
    export_to: NotSupported = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or h == "*" or " " in h:
                raise ValueError(f"host {h!r} must be a service name or FQDN (wildcard '*' alone "
                                 "is not supported)")
        if len(set(v)) != len(v):
            raise ValueError("duplicate host")
        return v

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, v: list[str]) -> list[str]:
        if any(g != "mesh" for g in v):
            raise ValueError("only the 'mesh' gateway is supported yet")
        return v


class Subset(Model):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: NotSupported = None

    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))


class DestinationRuleSpec(Model):
    host: str = Field(min_length=1)
    subsets: list[Subset] = Field(default_factory=list)
    traffic_policy: NotSupported = None
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
