"""shoal's RateLimitPolicy kind (group policy.shoal.io): rate limits and quotas of a service.

    apiVersion: policy.shoal.io/v1alpha1
    kind: RateLimitPolicy
    metadata: {name: reviews-limits}
    spec:
      host: reviews                 # the service whose sidecars enforce it (inbound)
      mode: global                  # local: each sidecar's token bucket; global: the
                                    # rate-limit service, counted across all replicas
      failureMode: open             # global: rate-limit service unreachable -> allow|deny
      limits:
      - name: all
        requestsPerUnit: 1000
        unit: second                # second | minute | hour | day
      - name: per-key
        match: {method: {exact: GET}, path: {prefix: /reviews}}
        perHeader: x-api-key        # one counter per distinct value of the header
        requestsPerUnit: 10
        unit: second
      quotas:                       # long windows, persisted by the rate-limit service
      - {name: daily, perHeader: x-api-key, requests: 10000, unit: day}

Requests that do not match a limit's ``match`` (or lack its ``perHeader`` header) are not
counted against that limit. See docs/ratelimit.md.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.meta import DNS_LABEL, Model
from shoal.api.types import StringMatch

POLICY = "policy.shoal.io/v1alpha1"

_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_PRINCIPAL = re.compile(r"^[^/\s]+/ns/[^/\s]+/sa/[^/\s]+$")


class Unit(StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        return {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[self.value]


class Mode(StrEnum):
    LOCAL = "local"
    GLOBAL = "global"


class FailureMode(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


def _header_name(v: str) -> str:
    if not _HEADER.match(v) or v.startswith(":"):
        raise ValueError("must be a lowercase HTTP header name")
    return v


class SourceMatch(Model):
    """Who is calling, from the caller's mTLS certificate (Istio principals,
    ``<trust domain>/ns/<ns>/sa/<service account>``)."""

    principals: list[str] = Field(min_length=1)

    @field_validator("principals")
    @classmethod
    def _principals(cls, v: list[str]) -> list[str]:
        for p in v:
            if not _PRINCIPAL.match(p):
                raise ValueError(f"{p!r} is not a principal such as "
                                 "'cluster.local/ns/default/sa/productpage'")
        return v


class RequestMatch(Model):
    """Which requests a limit counts (all fields AND-ed)."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    source: SourceMatch | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, StringMatch]) -> dict[str, StringMatch]:
        for name in v:
            _header_name(name)
        return v


class _Counted(Model):
    name: str = Field(min_length=1, max_length=63)
    match: RequestMatch | None = None
    per_header: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("must be a lowercase DNS-1123 label (a-z, 0-9 and '-')")
        return v

    @field_validator("per_header")
    @classmethod
    def _per_header(cls, v: str | None) -> str | None:
        return None if v is None else _header_name(v)


class Limit(_Counted):
    requests_per_unit: int = Field(ge=1, le=1_000_000_000)
    unit: Unit


class Quota(_Counted):
    """A long-window allowance (hour or day), persisted across restarts."""

    requests: int = Field(ge=1, le=1_000_000_000)
    unit: Unit = Unit.DAY

    @field_validator("unit")
    @classmethod
    def _long(cls, v: Unit) -> Unit:
        if v not in (Unit.HOUR, Unit.DAY):
            raise ValueError("a quota's unit must be 'hour' or 'day' (use limits for "
                             "shorter windows)")
        return v


class RateLimitPolicySpec(Model):
    host: str = Field(min_length=1)
    mode: Mode = Mode.LOCAL
    failure_mode: FailureMode = FailureMode.OPEN
    limits: list[Limit] = Field(default_factory=list)
    quotas: list[Quota] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v == "*" or "*" in v:
            raise ValueError("must name one service; wildcards are not supported")
        return v

    @model_validator(mode="after")
    def _check(self) -> RateLimitPolicySpec:
        if not self.limits and not self.quotas:
            raise ValueError("at least one of limits or quotas must be set")
        names = [x.name for x in (*self.limits, *self.quotas)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"limit and quota names must be unique: {', '.join(dupes)}")
        return self
