"""Istio's mesh configuration file (``shoal control-plane --mesh-config FILE``).

Istio keeps mesh-wide settings in its ``MeshConfig`` (the ``mesh`` key of the ``istio``
ConfigMap, or ``spec.meshConfig`` of an ``IstioOperator``). shoal reads the same YAML so
that the documents of Istio's tasks work unchanged; this module is its typed model.
Supported today: ``extensionProviders`` of the external-authorization kinds
(``envoyExtAuthzHttp``, ``envoyExtAuthzGrpc``), which ``AuthorizationPolicy`` with
``action: CUSTOM`` names (docs/adr/0033). Any other field is refused by name; where shoal
has the setting as a control-plane flag, the error says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
from envoy.type.v3 import http_status_pb2
from pydantic import Field, field_validator, model_validator

from shoal.api.meta import DNS_SUBDOMAIN, Model
from shoal.api.parse import load_documents, pydantic_violations
from shoal.api.types import Duration, NotSupported
from shoal.errors import ValidationError, Violation

# Istio's MeshConfig fields that shoal has as control-plane flags instead.
_FLAGS = {
    "rootNamespace": "--istio-root-namespace",
    "outboundTrafficPolicy": "--outbound-traffic-policy",
    "accessLogFile": "--access-log",
    "enableTracing": "--trace-sampling",
    "defaultConfig": "--trace-sampling (tracing); other proxy settings are shoal's own",
}
MAX_PROVIDERS = 64


def header_pattern(v: str) -> str:
    """Istio's header-name syntax in ext-authz lists: ``name``, ``prefix*`` or ``*suffix``."""
    if not v or v == "*" or "*" in v.strip("*") or (v.startswith("*") and v.endswith("*")):
        raise ValueError(f"{v!r}: a header name, 'prefix*' or '*suffix'")
    return v.lower()


class BodyInCheck(Model):
    """``includeRequestBodyInCheck``: send (part of) the request body to the authorizer."""

    max_request_bytes: int = Field(default=0, ge=0, le=16 << 20)
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class _ExtAuthz(Model):
    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
    fail_open: bool = False
    status_on_error: str | None = None
    clear_route_cache: bool = False
    include_request_body_in_check: BodyInCheck | None = None

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        host = v.split("/", 1)[-1]  # Istio also accepts "namespace/host"
        if not DNS_SUBDOMAIN.match(host.lower()):
            raise ValueError(f"{v!r} is not a service host such as "
                             "'ext-authz.foo.svc.cluster.local'")
        return v

    @field_validator("status_on_error")
    @classmethod
    def _status(cls, v: str | None) -> str | None:
        if v is not None and not (v.isdigit() and int(v) in http_status_pb2.StatusCode.values()
                                  and int(v) >= 200):
            raise ValueError("must be an HTTP status code such as '403' or '503'")
        return v


class ExtAuthzHttp(_ExtAuthz):
    """Envoy's ext_authz filter calling an HTTP authorizer (Istio's envoyExtAuthzHttp)."""

    path_prefix: str = ""
    include_request_headers_in_check: tuple[str, ...] = ()
    include_additional_headers_in_check: dict[str, str] = Field(default_factory=dict)
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()
    include_headers_in_check: NotSupported = None  # deprecated by Istio

    @field_validator("include_request_headers_in_check", "headers_to_upstream_on_allow",
                     "headers_to_downstream_on_deny", "headers_to_downstream_on_allow")
    @classmethod
    def _headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(header_pattern(h) for h in v)

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class ExtAuthzGrpc(_ExtAuthz):
    """Envoy's ext_authz filter calling a gRPC authorizer (envoy.service.auth.v3)."""


class ExtensionProvider(Model):
    name: str = Field(min_length=1, max_length=253)
    envoy_ext_authz_http: ExtAuthzHttp | None = None
    envoy_ext_authz_grpc: ExtAuthzGrpc | None = None

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            other = sorted(k for k in data if k not in (
                "name", "envoyExtAuthzHttp", "envoyExtAuthzGrpc",
                "envoy_ext_authz_http", "envoy_ext_authz_grpc"))
            if other:
                raise ValueError(f"provider kind {other[0]!r} is not supported by shoal "
                                 "(supported: envoyExtAuthzHttp, envoyExtAuthzGrpc)")
        return data

    @model_validator(mode="after")
    def _one(self) -> ExtensionProvider:
        if (self.envoy_ext_authz_http is None) == (self.envoy_ext_authz_grpc is None):
            raise ValueError("exactly one of envoyExtAuthzHttp or envoyExtAuthzGrpc")
        return self

    @property
    def ext_authz(self) -> ExtAuthzHttp | ExtAuthzGrpc:
        out = self.envoy_ext_authz_http or self.envoy_ext_authz_grpc
        assert out is not None
        return out


class MeshConfigFile(Model):
    extension_providers: tuple[ExtensionProvider, ...] = Field(
        default=(), max_length=MAX_PROVIDERS)

    @model_validator(mode="before")
    @classmethod
    def _elsewhere(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, flag in _FLAGS.items():
                if key in data:
                    raise ValueError(f"{key}: set with shoal control-plane {flag}")
        return data

    @field_validator("extension_providers")
    @classmethod
    def _unique(cls, v: tuple[ExtensionProvider, ...]) -> tuple[ExtensionProvider, ...]:
        names = [p.name for p in v]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate provider name(s) {dups}")
        return v


def _mesh_section(doc: Any, source: str) -> tuple[Any, tuple[str, ...]]:
    """The MeshConfig inside ``doc``: an IstioOperator's spec.meshConfig, the ``istio``
    ConfigMap's data.mesh (YAML text), or a bare MeshConfig mapping."""
    if not isinstance(doc, dict):
        raise ValidationError([Violation("", "must be a mapping (Istio's MeshConfig)", source)])
    kind = doc.get("kind")
    if kind == "IstioOperator":
        spec = doc.get("spec") or {}
        return (spec.get("meshConfig") or {} if isinstance(spec, dict) else spec,
                ("spec", "meshConfig"))
    if kind == "ConfigMap":
        data = doc.get("data") or {}
        text = data.get("mesh", "") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise ValidationError([Violation("data.mesh", "must be YAML text", source)])
        docs = load_documents(text, source)
        return (docs[0] if docs else {}), ("data", "mesh")
    if kind is not None:
        raise ValidationError([Violation("kind", "must be IstioOperator or ConfigMap, or no "
                                         "kind (a bare MeshConfig)", source)])
    return doc, ()


def parse_mesh_config(text: str, source: str = "") -> MeshConfigFile:
    """Istio mesh-config YAML -> :class:`MeshConfigFile`; every problem as one
    :class:`ValidationError` with field paths."""
    docs = load_documents(text, source)
    if len(docs) != 1:
        raise ValidationError([Violation("", "must hold exactly one document", source)])
    section, prefix = _mesh_section(docs[0], source)
    try:
        return MeshConfigFile.model_validate(section)
    except pydantic.ValidationError as e:
        raise ValidationError(pydantic_violations(e, prefix, source)) from None


def load_mesh_config(path: Path) -> MeshConfigFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValidationError([Violation("", f"cannot read: {e}", str(path))]) from None
    return parse_mesh_config(text, str(path))
