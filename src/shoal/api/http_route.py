"""Parts of a VirtualService HTTP rule beyond match and route: redirect, rewrite, direct
response, header operations, retries, fault injection, mirroring and CORS (Istio shapes).
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from shoal.api.meta import Model
from shoal.api.types import Duration, NotSupported, StringMatch, check_re2

REDIRECT_CODES = (301, 302, 303, 307, 308)

# gRPC status names Istio accepts in fault.abort.grpcStatus -> code
GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

# Envoy retry_on conditions (HTTP and gRPC) Istio passes through; numbers are status codes.
RETRY_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})


class Percent(Model):
    value: float = Field(ge=0, le=100)


# Istio's marker for a Gateway API redirect's ReplacePrefixMatch: a translated route's
# redirect ``uri`` of "%PREFIX()%/new" replaces the matched prefix with /new (only in
# routes translated from the Gateway API, as in Istio; elsewhere the text is a path)
PREFIX_MARKER = "%PREFIX()%"


class HTTPRedirect(Model):
    uri: str | None = None
    authority: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    scheme: Literal["http", "https"] | None = None
    redirect_code: int = 301
    derive_port: NotSupported = None

    @field_validator("redirect_code")
    @classmethod
    def _code(cls, v: int) -> int:
        if v not in REDIRECT_CODES:
            raise ValueError(f"must be one of {', '.join(map(str, REDIRECT_CODES))}")
        return v


class RegexRewrite(Model):
    match: Annotated[str, AfterValidator(check_re2)]
    rewrite: str


class HTTPRewrite(Model):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one_uri(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("set uri or uriRegexRewrite, not both")
        return self


class HTTPBody(Model):
    string: str | None = None
    bytes: str | None = None  # base64, as in Istio

    @field_validator("bytes")
    @classmethod
    def _b64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except ValueError:
                raise ValueError("must be base64") from None
        return v

    @model_validator(mode="after")
    def _one(self) -> HTTPBody:
        if (self.string is None) == (self.bytes is None):
            raise ValueError("exactly one of string or bytes must be set")
        return self


class HTTPDirectResponse(Model):
    status: int = Field(ge=200, le=599)
    body: HTTPBody | None = None


def _header_names(v: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
    for name in v:
        if not name or name != name.lower() or " " in name:
            raise ValueError(f"header name {name!r} must be non-empty, lowercase, no spaces")
    return v


class HeaderOperations(Model):
    set: Annotated[dict[str, str], AfterValidator(_header_names)] = Field(default_factory=dict)
    add: Annotated[dict[str, str], AfterValidator(_header_names)] = Field(default_factory=dict)
    remove: Annotated[list[str], AfterValidator(_header_names)] = Field(default_factory=list)


class Headers(Model):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRetry(Model):
    attempts: int = Field(default=2, ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool = False
    retry_ignore_previous_hosts: bool = True
    backoff: NotSupported = None

    @field_validator("retry_on")
    @classmethod
    def _conditions(cls, v: str | None) -> str | None:
        for item in (v or "").split(","):
            item = item.strip()
            if item.isdigit():
                if not 100 <= int(item) <= 599:
                    raise ValueError(f"status code {item} is not between 100 and 599")
            elif item not in RETRY_CONDITIONS:
                raise ValueError(f"unknown retry condition {item!r} (known: "
                                 f"{', '.join(sorted(RETRY_CONDITIONS))} or a status code)")
        return v


def _one_percentage(percentage: Percent | None, percent: int | None) -> None:
    if percentage is not None and percent is not None:
        raise ValueError("set percentage or percent, not both")


class Delay(Model):
    fixed_delay: Duration | None = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)  # deprecated Istio spelling
    exponential_delay: NotSupported = None

    @model_validator(mode="after")
    def _check(self) -> Delay:
        if self.fixed_delay is None:
            raise ValueError("fixedDelay is required")
        _one_percentage(self.percentage, self.percent)
        return self

    def fraction(self) -> float:
        return _fraction(self.percentage, self.percent)


class Abort(Model):
    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    percentage: Percent | None = None
    http2_error: NotSupported = None

    @field_validator("grpc_status")
    @classmethod
    def _grpc(cls, v: str | None) -> str | None:
        if v is not None and v not in GRPC_CODES:
            raise ValueError(f"unknown gRPC status {v!r} (use a name such as UNAVAILABLE)")
        return v

    @model_validator(mode="after")
    def _one(self) -> Abort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("exactly one of httpStatus or grpcStatus must be set")
        return self

    def fraction(self) -> float:
        return _fraction(self.percentage, None)


def _fraction(percentage: Percent | None, percent: int | None) -> float:
    """Percent of requests affected; Istio's default is all of them."""
    if percentage is not None:
        return percentage.value
    return 100.0 if percent is None else float(percent)


class HTTPFaultInjection(Model):
    delay: Delay | None = None
    abort: Abort | None = None

    @model_validator(mode="after")
    def _some(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("set delay, abort or both")
        return self


class CorsPolicy(Model):
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    allow_origin: NotSupported = None  # deprecated in Istio: use allowOrigins
    unmatched_preflights: NotSupported = None
