"""Kubernetes Gateway API kinds (``gateway.networking.k8s.io``): HTTPRoute and GRPCRoute
as mesh routes (GAMMA: the parent is a Service, docs/adr/0035) and as a Gateway's
routes; Gateway (HTTP, HTTPS, TLS passthrough and TCP listeners, docs/adr/0039),
GatewayClass, TLSRoute and TCPRoute; ReferenceGrant.

The models follow the Gateway API's v1 field names. What is not built yet is refused by
name, never ignored: UDP listeners, TLS termination on TLS listeners, the ExtensionRef
and CORS filters, and the few fields marked NotSupported. A *reference* to a kind shoal
cannot use is not refused: the spec has it stored and reported in status (docs/adr/0040):
a backend of another kind than Service (``ResolvedRefs: InvalidKind``, its requests
answered 500), ReferenceGrant entries for other kinds (they grant nothing shoal uses).
Its group and kind are still checked for their shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from shoal.api.meta import DNS_LABEL, DNS_SUBDOMAIN, Model
from shoal.api.selector import MatchSelector
from shoal.api.types import NotSupported, check_re2

GROUP = "gateway.networking.k8s.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
CORE = ("", "core")  # a Kubernetes Service: shoal's Service kind stands in for it
MAX_RULES = 64
MAX_MATCHES = 64
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def _header_name(v: str) -> str:
    if not _HEADER_NAME.match(v) or len(v) > 256:
        raise ValueError(f"{v!r} is not an HTTP header name")
    return v


HeaderName = Annotated[str, AfterValidator(_header_name)]

_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def _group(v: str) -> str:
    if v and (len(v) > 253 or not DNS_SUBDOMAIN.match(v)):
        raise ValueError(f"{v!r} is not an API group (a DNS subdomain; '' for core)")
    return v


def _kind(v: str) -> str:
    if len(v) > 63 or not _KIND.match(v):
        raise ValueError(f"{v!r} is not a kind (a letter, then letters, digits or '-'; "
                         "at most 63)")
    return v


def _check_namespace(v: str | None) -> None:
    """A reference's namespace, when it names one: a namespace name."""
    if v is not None and not DNS_LABEL.match(v):
        raise ValueError("namespace: not a namespace name")


# the shapes of a reference's group and kind (the spec's Group and Kind): checked even
# where the kind named is one shoal does not use (then only the status says so)
Group = Annotated[str, AfterValidator(_group)]
Kind = Annotated[str, AfterValidator(_kind)]


class PathType(StrEnum):
    EXACT = "Exact"
    PATH_PREFIX = "PathPrefix"
    REGULAR_EXPRESSION = "RegularExpression"


class ValueType(StrEnum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


class PathMatch(Model):
    type: PathType = PathType.PATH_PREFIX
    value: str = "/"

    @model_validator(mode="after")
    def _value(self) -> PathMatch:
        if self.type is PathType.REGULAR_EXPRESSION:
            check_re2(self.value)
        elif not self.value.startswith("/") or "//" in self.value or "?" in self.value \
                or "#" in self.value:
            raise ValueError("value: must be an absolute path without '//', '?' or '#'")
        return self


class HeaderMatch(Model):
    type: ValueType = ValueType.EXACT
    name: HeaderName
    value: str = Field(max_length=4096)

    @model_validator(mode="after")
    def _regex(self) -> HeaderMatch:
        if self.type is ValueType.REGULAR_EXPRESSION:
            check_re2(self.value)
        return self


class QueryParamMatch(HeaderMatch):
    pass


class HTTPMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    CONNECT = "CONNECT"
    OPTIONS = "OPTIONS"
    TRACE = "TRACE"
    PATCH = "PATCH"


class RouteMatch(Model):
    path: PathMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)
    query_params: list[QueryParamMatch] = Field(default_factory=list, max_length=16)
    method: HTTPMethod | None = None

    @field_validator("headers", "query_params")
    @classmethod
    def _unique(cls, v: list[HeaderMatch]) -> list[HeaderMatch]:
        return unique_names(v)


def unique_names(v: list[HeaderMatch]) -> list[HeaderMatch]:
    names = [m.name.lower() for m in v]
    if len(set(names)) != len(names):
        raise ValueError("names must be unique (case-insensitive)")
    return v


class HeaderValue(Model):
    name: HeaderName
    value: str = Field(max_length=4096)


class HeaderModifier(Model):
    set: list[HeaderValue] = Field(default_factory=list, max_length=16)
    add: list[HeaderValue] = Field(default_factory=list, max_length=16)
    remove: list[HeaderName] = Field(default_factory=list, max_length=16)


class PathModifierType(StrEnum):
    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


class PathModifier(Model):
    type: PathModifierType
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PathModifier:
        want = ("replace_full_path" if self.type is PathModifierType.REPLACE_FULL_PATH
                else "replace_prefix_match")
        other = ({"replace_full_path", "replace_prefix_match"} - {want}).pop()
        value = getattr(self, want)
        if value is None or getattr(self, other) is not None:
            raise ValueError(f"type {self.type} needs exactly its own field")
        if not value.startswith("/"):
            raise ValueError("the path must start with '/'")
        return self


class RequestRedirect(Model):
    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    status_code: int = 302

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v not in ("http", "https"):
            raise ValueError("must be http or https")
        return v

    @field_validator("status_code")
    @classmethod
    def _code(cls, v: int) -> int:
        if v not in (301, 302, 303, 307, 308):
            raise ValueError("must be 301, 302, 303, 307 or 308")
        return v


# what follows a PathPrefix's value in its regex: the rest of the path, whole segments only
SEGMENTS = "(/.*)?"


def replace_prefix(prefix_regex: str, replacement: str) -> tuple[str, str]:
    """``ReplacePrefixMatch`` as a regex rewrite (pattern, substitution) of the path:
    ``prefix_regex`` (the matched prefix, already a regex, without a trailing ``/``) is
    replaced by ``replacement`` and the rest of the path kept, whole segments only; an
    empty replacement leaves ``/`` and the rest. The one home of the rule (URLRewrite and
    RequestRedirect both use it)."""
    replacement = replacement.rstrip("/")
    if replacement:
        return f"^{prefix_regex}{SEGMENTS}$", replacement + "\\1"
    return f"^{prefix_regex}/?(.*)$", "/\\1"


class URLRewrite(Model):
    hostname: str | None = None
    path: PathModifier | None = None


class Fraction(Model):
    numerator: int = Field(ge=0)
    denominator: int = Field(default=100, ge=1)


class BackendRef(Model):
    """A route's backend. shoal routes to Services only; a reference to another kind is
    stored all the same (the spec's choice): the route's status says ``InvalidKind`` and
    the requests for it are answered 500 (``registry.gamma.backend_problem``)."""

    group: Group = ""
    kind: Kind = "Service"
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=1_000_000)
    filters: list[Filter] = Field(default_factory=list, max_length=16)

    @property
    def is_service(self) -> bool:
        """Does it name a Service (core group), the one kind of backend shoal has?"""
        return self.group in CORE and self.kind == "Service"

    @property
    def group_kind(self) -> str:
        return f"{self.group or 'core'}/{self.kind}"

    @model_validator(mode="after")
    def _service(self) -> BackendRef:
        _check_namespace(self.namespace)
        if self.is_service and self.port is None:
            raise ValueError("port: is required for a Service backend")
        bad = [str(f.type) for f in self.filters if f.type not in (
            FilterType.REQUEST_HEADER_MODIFIER, FilterType.RESPONSE_HEADER_MODIFIER)]
        if bad:
            raise ValueError(f"filters: {bad} on a backend are not supported by shoal yet "
                             "(RequestHeaderModifier and ResponseHeaderModifier are)")
        kinds = [f.type for f in self.filters]
        if len(set(kinds)) != len(kinds):
            raise ValueError("filters: a filter type more than once")
        return self


class RequestMirror(Model):
    backend_ref: BackendRef
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


class FilterType(StrEnum):
    REQUEST_HEADER_MODIFIER = "RequestHeaderModifier"
    RESPONSE_HEADER_MODIFIER = "ResponseHeaderModifier"
    REQUEST_REDIRECT = "RequestRedirect"
    URL_REWRITE = "URLRewrite"
    REQUEST_MIRROR = "RequestMirror"
    EXTENSION_REF = "ExtensionRef"
    CORS = "CORS"


class Filter(Model):
    type: FilterType
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None
    extension_ref: NotSupported = None
    cors: NotSupported = None

    @model_validator(mode="after")
    def _matching(self) -> Filter:
        if self.type in (FilterType.EXTENSION_REF, FilterType.CORS):
            raise ValueError(f"type: {self.type} is not supported by shoal yet")
        field = {FilterType.REQUEST_HEADER_MODIFIER: "request_header_modifier",
                 FilterType.RESPONSE_HEADER_MODIFIER: "response_header_modifier",
                 FilterType.REQUEST_REDIRECT: "request_redirect",
                 FilterType.URL_REWRITE: "url_rewrite",
                 FilterType.REQUEST_MIRROR: "request_mirror"}[self.type]
        set_ = [f for f in ("request_header_modifier", "response_header_modifier",
                            "request_redirect", "url_rewrite", "request_mirror")
                if getattr(self, f) is not None]
        if set_ != [field]:
            raise ValueError(f"type {self.type} needs exactly its own field")
        return self


BackendRef.model_rebuild()  # its filters are Filters, defined after it
RequestMirror.model_rebuild()


class Timeouts(Model):
    request: str | None = None
    backend_request: str | None = None

    @field_validator("request", "backend_request")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        # Gateway API durations (GEP-2257): 1h, 30m, 10s, 500ms and combinations; 0s = none
        if v is not None and not re.fullmatch(r"(?:\d{1,5}(?:h|m|s|ms)){1,4}", v):
            raise ValueError(f"{v!r} is not a Gateway API duration such as '10s' or '1m30s'")
        return v


class Retry(Model):
    codes: list[int] = Field(default_factory=list, max_length=32)
    attempts: int | None = Field(default=None, ge=0, le=100)
    backoff: NotSupported = None

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if not 400 <= c <= 599]
        if bad:
            raise ValueError(f"{bad}: retriable codes are 4xx or 5xx")
        return v


class Rule(Model):
    name: str | None = None
    matches: list[RouteMatch] = Field(default_factory=list, max_length=MAX_MATCHES)
    filters: list[Filter] = Field(default_factory=list, max_length=16)
    backend_refs: list[BackendRef] = Field(default_factory=list, max_length=16)
    timeouts: Timeouts | None = None
    retry: Retry | None = None
    session_persistence: NotSupported = None

    @model_validator(mode="after")
    def _filters(self) -> Rule:
        kinds = [f.type for f in self.filters if f.type is not FilterType.REQUEST_MIRROR]
        dup = {k for k in kinds if kinds.count(k) > 1}
        if dup:
            raise ValueError(f"filters: {sorted(dup)} more than once")
        if FilterType.REQUEST_REDIRECT in kinds and FilterType.URL_REWRITE in kinds:
            raise ValueError("filters: RequestRedirect and URLRewrite cannot be combined")
        if FilterType.REQUEST_REDIRECT in kinds and self.backend_refs:
            raise ValueError("backendRefs: a rule with RequestRedirect has no backends")
        for f in self.filters:
            mod = (f.url_rewrite or f.request_redirect)
            path = mod.path if mod is not None else None
            if path is not None and path.type is PathModifierType.REPLACE_PREFIX_MATCH \
                    and any(m.path is None or m.path.type is not PathType.PATH_PREFIX
                            for m in (self.matches or [RouteMatch()])):
                raise ValueError("filters: ReplacePrefixMatch needs PathPrefix matches")
        return self


_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_hostname(v: str) -> str:
    """A Gateway API hostname: a DNS name, optionally with a ``*.`` wildcard label first;
    not an IP address."""
    if not _HOSTNAME.match(v) or len(v) > 253 or re.fullmatch(r"[\d.]+", v):
        raise ValueError(f"{v!r} is not a hostname (a DNS name, optionally starting "
                         "with '*.'; not an IP address)")
    return v


Hostname = Annotated[str, AfterValidator(check_hostname)]


class ParentRef(Model):
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str = Field(min_length=1, max_length=253)
    section_name: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)

    @property
    def is_service(self) -> bool:
        return (self.group or "") in CORE and self.kind == "Service"

    @model_validator(mode="after")
    def _kind(self) -> ParentRef:
        if not self.is_service and ((self.group if self.group is not None else GROUP)
                                    != GROUP or (self.kind or "Gateway") != "Gateway"):
            raise ValueError(f"kind: {self.group or 'core'}/{self.kind} parents are not "
                             "supported by shoal (a Gateway, or a Service for mesh routes)")
        if self.is_service and self.section_name is not None:
            raise ValueError("sectionName: not supported by shoal for a Service parent "
                             "(use port)")
        _check_namespace(self.namespace)
        return self


class _RouteSpec(Model):
    """What HTTPRoute and GRPCRoute share: their parents and hostnames."""

    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    hostnames: list[Hostname] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _parents(self) -> _RouteSpec:
        kinds = {p.is_service for p in self.parent_refs}
        if len(kinds) > 1:
            raise ValueError("parentRefs: a route's parents are all Services (a mesh "
                             "route) or all Gateways, not both")
        if self.hostnames and True in kinds:
            raise ValueError("hostnames are ignored for mesh routes (GAMMA): leave them out")
        return self

    @property
    def for_gateways(self) -> bool:
        return not self.parent_refs[0].is_service


class HTTPRouteSpec(_RouteSpec):
    rules: list[Rule] = Field(default_factory=lambda: [Rule()], max_length=MAX_RULES)


# -- GRPCRoute ---------------------------------------------------------------------------------

_GRPC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class GRPCMethodMatch(Model):
    type: ValueType = ValueType.EXACT
    service: str | None = Field(default=None, max_length=1024)
    method: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _names(self) -> GRPCMethodMatch:
        if self.service is None and self.method is None:
            raise ValueError("one of service or method is required")
        for f in ("service", "method"):
            v = getattr(self, f)
            if v is None:
                continue
            if self.type is ValueType.REGULAR_EXPRESSION:
                check_re2(v)
            elif not _GRPC_NAME.match(v) or (f == "method" and "." in v):
                raise ValueError(f"{f}: {v!r} is not a gRPC {f} name")
        return self


class GRPCRouteMatch(Model):
    method: GRPCMethodMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)

    @field_validator("headers")
    @classmethod
    def _unique(cls, v: list[HeaderMatch]) -> list[HeaderMatch]:
        return unique_names(v)


_GRPC_FILTERS = (FilterType.REQUEST_HEADER_MODIFIER, FilterType.RESPONSE_HEADER_MODIFIER,
                 FilterType.REQUEST_MIRROR)


class GRPCRule(Model):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list, max_length=MAX_MATCHES)
    filters: list[Filter] = Field(default_factory=list, max_length=16)
    backend_refs: list[BackendRef] = Field(default_factory=list, max_length=16)
    session_persistence: NotSupported = None

    @model_validator(mode="after")
    def _filters(self) -> GRPCRule:
        bad = [str(f.type) for f in self.filters if f.type not in _GRPC_FILTERS]
        if bad:
            raise ValueError(f"filters: {bad} are not GRPCRoute filters (RequestHeaderModifier, "
                             "ResponseHeaderModifier, RequestMirror)")
        return self


class GRPCRouteSpec(_RouteSpec):
    rules: list[GRPCRule] = Field(default_factory=lambda: [GRPCRule()], max_length=MAX_RULES)



# -- TLSRoute, TCPRoute (experimental channel) --------------------------------------------------

TLS_ROUTE_VERSIONS = (f"{GROUP}/v1alpha2", f"{GROUP}/v1alpha3")
TCP_ROUTE_VERSIONS = (f"{GROUP}/v1alpha2",)


class L4Rule(Model):
    """A TLSRoute's or TCPRoute's rule: weighted Service backends."""

    name: str | None = None
    backend_refs: list[BackendRef] = Field(min_length=1, max_length=16)

    @field_validator("backend_refs")
    @classmethod
    def _no_filters(cls, v: list[BackendRef]) -> list[BackendRef]:
        if any(r.filters for r in v):
            raise ValueError("filters: not for TLS or TCP backends")
        return v


class _L4RouteSpec(_RouteSpec):
    rules: list[L4Rule] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _gateways_only(self) -> _L4RouteSpec:
        if not self.for_gateways:
            raise ValueError("parentRefs: TLSRoutes and TCPRoutes attach to Gateways in "
                             "shoal (mesh TLS and TCP routing: a VirtualService)")
        return self


class TLSRouteSpec(_L4RouteSpec):
    pass


class TCPRouteSpec(_L4RouteSpec):
    @model_validator(mode="after")
    def _one_rule(self) -> TCPRouteSpec:
        if self.hostnames:
            raise ValueError("hostnames: a TCPRoute has none (it takes a listener's port)")
        if len(self.rules) > 1:
            raise ValueError("rules: one rule per TCPRoute in shoal (nothing tells a "
                             "connection which rule it is for)")
        return self


def backend_refs(rules: Iterable[Rule | GRPCRule | L4Rule]) -> Iterator[tuple[str, BackendRef]]:
    """Every backend a route's ``rules`` refer to, with its field path: the rules'
    ``backendRefs`` and their ``RequestMirror`` filters' ``backendRef``."""
    for i, rule in enumerate(rules):
        for j, ref in enumerate(rule.backend_refs):
            yield f"spec.rules[{i}].backendRefs[{j}]", ref
        for k, f in enumerate(getattr(rule, "filters", ())):
            if f.request_mirror is not None:
                yield f"spec.rules[{i}].filters[{k}].requestMirror.backendRef", \
                    f.request_mirror.backend_ref


# -- Gateway -----------------------------------------------------------------------------------

# GatewayClasses shoal serves without a GatewayClass document: its own, and Istio's (so
# that Istio's task files run unchanged). A GatewayClass document of the same name
# decides instead.
CONTROLLER_NAME = "shoal.io/gateway-controller"
CLASSES = ("shoal", "istio")
# The label of the gateway workloads that serve a Gateway (`shoal gateway run --name`
# sets it; Istio's automated deployments carry the same)
GATEWAY_NAME_LABEL = f"{GROUP}/gateway-name"


class ListenerProtocol(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    UDP = "UDP"


class CertificateRef(Model):
    group: str = ""
    kind: str = "Secret"
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None

    @model_validator(mode="after")
    def _secret(self) -> CertificateRef:
        if self.group not in CORE or self.kind != "Secret":
            raise ValueError(f"kind: {self.group or 'core'}/{self.kind}: certificates are "
                             "Secrets (the gateway's --credential names)")
        _check_namespace(self.namespace)
        return self


class TLSMode(StrEnum):
    TERMINATE = "Terminate"
    PASSTHROUGH = "Passthrough"


class GatewayTLSConfig(Model):
    mode: TLSMode = TLSMode.TERMINATE
    certificate_refs: list[CertificateRef] = Field(default_factory=list, max_length=64)
    options: NotSupported = None
    frontend_validation: NotSupported = None


class FromNamespaces(StrEnum):
    ALL = "All"
    SAME = "Same"
    SELECTOR = "Selector"


class RouteNamespaces(Model):
    from_: FromNamespaces = Field(default=FromNamespaces.SAME, alias="from")
    # the labels of the routes' namespaces (Namespace documents; every namespace has
    # kubernetes.io/metadata.name: <its name>)
    selector: MatchSelector | None = None

    @model_validator(mode="after")
    def _selector(self) -> RouteNamespaces:
        if (self.from_ is FromNamespaces.SELECTOR) != (self.selector is not None):
            raise ValueError("selector: goes with from: Selector (and only with it)")
        return self


class RouteGroupKind(Model):
    group: str = GROUP
    kind: str

    @model_validator(mode="after")
    def _route(self) -> RouteGroupKind:
        if self.group != GROUP or self.kind not in ("HTTPRoute", "GRPCRoute", "TLSRoute",
                                                    "TCPRoute"):
            raise ValueError(f"{self.group}/{self.kind}: shoal's listeners take HTTPRoutes, "
                             "GRPCRoutes, TLSRoutes and TCPRoutes")
        return self


# the route kinds each listener protocol takes
ROUTE_KINDS = {"HTTP": ("HTTPRoute", "GRPCRoute"), "HTTPS": ("HTTPRoute", "GRPCRoute"),
               "TLS": ("TLSRoute",), "TCP": ("TCPRoute",)}


class AllowedRoutes(Model):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list, max_length=8)


class Listener(Model):
    name: str = Field(min_length=1, max_length=253)
    hostname: Hostname | None = None
    port: int = Field(ge=1, le=65535)
    protocol: ListenerProtocol
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("must be a lowercase DNS-1123 label")
        return v

    @property
    def route_kinds(self) -> tuple[str, ...]:
        """The kinds of route it takes (its protocol's, narrowed by allowedRoutes)."""
        wanted = {k.kind for k in self.allowed_routes.kinds}
        return tuple(k for k in ROUTE_KINDS[str(self.protocol)] if not wanted or k in wanted)

    @model_validator(mode="after")
    def _protocol(self) -> Listener:
        if self.protocol is ListenerProtocol.UDP:
            raise ValueError("protocol: UDP listeners are not supported by shoal")
        wanted = {k.kind for k in self.allowed_routes.kinds}
        if wanted - set(ROUTE_KINDS[str(self.protocol)]):
            raise ValueError(f"allowedRoutes.kinds: a {self.protocol} listener takes "
                             f"{' and '.join(ROUTE_KINDS[str(self.protocol)])}s")
        if self.protocol is ListenerProtocol.TLS:
            if self.tls is None or self.tls.mode is not TLSMode.PASSTHROUGH:
                raise ValueError("tls.mode: shoal's TLS listeners pass TLS through "
                                 "(Passthrough); to terminate TLS use an HTTPS listener")
            if self.tls.certificate_refs:
                raise ValueError("tls.certificateRefs: not used by Passthrough")
            return self
        if self.protocol is ListenerProtocol.TCP:
            if self.tls is not None:
                raise ValueError("tls: not used by TCP listeners")
            if self.hostname is not None:
                raise ValueError("hostname: not used by TCP listeners")
            return self
        if self.protocol is ListenerProtocol.HTTPS:
            if self.tls is None or not self.tls.certificate_refs:
                raise ValueError("tls: an HTTPS listener needs tls.certificateRefs")
            if self.tls.mode is not TLSMode.TERMINATE:
                raise ValueError("tls.mode: an HTTPS listener terminates TLS (Passthrough "
                                 "is for TLS listeners)")
            if len(self.tls.certificate_refs) > 1:
                raise ValueError("tls.certificateRefs: one certificate per listener in "
                                 "shoal")
        elif self.tls is not None:
            raise ValueError("tls: only for HTTPS listeners")
        return self


class GatewayClassSpec(Model):
    """A GatewayClass (cluster-scoped): Gateways of this class are shoal's when its
    ``controllerName`` is :data:`CONTROLLER_NAME`."""

    controller_name: str = Field(min_length=1, max_length=253)
    description: str | None = Field(default=None, max_length=64)
    parameters_ref: NotSupported = None


class GatewayAddress(Model):
    type: str = "IPAddress"
    value: str


class GatewaySpec(Model):
    """A Gateway API Gateway (not Istio's ``Gateway``: see api/gateway.py)."""

    gateway_class_name: str = Field(min_length=1, max_length=253)
    listeners: list[Listener] = Field(min_length=1, max_length=64)
    addresses: NotSupported = None
    infrastructure: NotSupported = None
    backend_tls: NotSupported = None

    @model_validator(mode="after")
    def _listeners(self) -> GatewaySpec:
        names = [lis.name for lis in self.listeners]
        if len(set(names)) != len(names):
            raise ValueError("listeners: names must be unique")
        seen: dict[tuple[int, str], str] = {}
        protocols: dict[int, ListenerProtocol] = {}
        for lis in self.listeners:
            p = protocols.setdefault(lis.port, lis.protocol)
            if p is not lis.protocol:
                raise ValueError(f"listeners: port {lis.port} with protocols {p} and "
                                 f"{lis.protocol}")
            key = (lis.port, lis.hostname or "")
            if key in seen:
                raise ValueError(f"listeners: {seen[key]} and {lis.name} have the same port "
                                 "and hostname")
            seen[key] = lis.name
        return self


# -- ReferenceGrant ----------------------------------------------------------------------------

REFERENCE_GRANT_VERSIONS = (f"{GROUP}/v1beta1", f"{GROUP}/v1")


class GrantFrom(Model):
    """Who may refer: any group and kind is stored; shoal resolves references of routes
    (to Services) and of Gateways (to Secrets), so other entries grant nothing it uses."""

    group: Group
    kind: Kind
    namespace: str

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError("not a namespace name")
        return v


class GrantTo(Model):
    """What may be referred to (in the grant's namespace): any group and kind is stored;
    shoal uses Services and Secrets."""

    group: Group = ""
    kind: Kind
    name: str | None = Field(default=None, min_length=1, max_length=253)


class ReferenceGrantSpec(Model):
    from_: list[GrantFrom] = Field(alias="from", min_length=1, max_length=16)
    to: list[GrantTo] = Field(min_length=1, max_length=16)

    def allows(self, from_kind: str, from_namespace: str, to_kind: str, to_name: str) -> bool:
        """Does this grant (held in the namespace of what is referred to) let a
        ``from_kind`` of this API group in ``from_namespace`` refer to the core
        ``to_kind`` named ``to_name``? The one home of the matching rule: entries naming
        other groups, kinds or names allow nothing here."""
        return (any(f.group == GROUP and f.kind == from_kind and f.namespace == from_namespace
                    for f in self.from_)
                and any(t.group in CORE and t.kind == to_kind and t.name in (None, to_name)
                        for t in self.to))
