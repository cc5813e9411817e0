"""The kinds shoal accepts: apiVersions, names, aliases and the spec model of each."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.api import gatewayapi
from shoal.api.envoyfilter import EnvoyFilterSpec
from shoal.api.gateway import GatewaySpec
from shoal.api.mesh import NamespaceSpec, ServiceSpec, TokenRevocationSpec, WorkloadSpec
from shoal.api.meta import Model
from shoal.api.networking import DestinationRuleSpec, VirtualServiceSpec
from shoal.api.serviceentry import ServiceEntrySpec
from shoal.api.sidecar import SidecarSpec
from shoal.api.telemetry import TELEMETRY, ServiceLevelObjectiveSpec
from shoal.errors import NotFound
from shoal.ratelimit.model import POLICY, RateLimitPolicySpec
from shoal.security.model import (
    AuthorizationPolicySpec,
    PeerAuthenticationSpec,
    RequestAuthenticationSpec,
)

SHOAL_MESH = "mesh.shoal.io/v1alpha1"
ISTIO_NETWORKING = ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                    "networking.istio.io/v1alpha3")
ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")


def document_kind(name: str) -> str:
    """A kind's name as documents write it (``Gateway.gateway.networking.k8s.io`` ->
    ``Gateway``)."""
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class Kind:
    """One kind. ``name`` is its identity in the store, the REST API and the mesh
    snapshot: the documents' kind (``VirtualService``), or, where two APIs give their
    kinds the same name, that name qualified by the API group
    (``Gateway.gateway.networking.k8s.io``: Istio's ``Gateway`` came first and keeps the
    plain name). Documents say ``kind: Gateway`` either way; the apiVersion tells them
    apart (docs/adr/0039)."""

    name: str  # "VirtualService"
    api_versions: tuple[str, ...]  # accepted; the first is the one shoal writes
    spec: type[Model]
    plural: str
    aliases: tuple[str, ...] = ()
    # cluster-scoped in Kubernetes: the REST API keeps it in the mesh root namespace
    # (a namespace in the document is ignored, as kubectl does; docs/adr/0039)
    cluster_scoped: bool = False
    spec_optional: bool = False  # documents may leave spec out (a Namespace)

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    @property
    def group(self) -> str:
        """The API group ("" for Kubernetes' core kinds, apiVersion v1)."""
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def document_kind(self) -> str:
        """``kind`` as documents write it."""
        return document_kind(self.name)

    @property
    def qualified(self) -> str:
        """The plural qualified by the API group, as kubectl writes it
        (``gateways.gateway.networking.k8s.io``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def names(self) -> set[str]:
        """What the CLI and the REST API accept for it (case-insensitive)."""
        group = f".{self.group}" if self.group else ""
        return {self.name.lower(), self.plural, *self.aliases, self.qualified,
                f"{self.document_kind.lower()}{group}"}


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("Service", (SHOAL_MESH,), ServiceSpec, "services", ("svc",)),
        Kind("Workload", (SHOAL_MESH,), WorkloadSpec, "workloads", ("wl", "we")),
        Kind("VirtualService", ISTIO_NETWORKING, VirtualServiceSpec, "virtualservices", ("vs",)),
        Kind("DestinationRule", ISTIO_NETWORKING, DestinationRuleSpec, "destinationrules",
             ("dr",)),
        Kind("ServiceEntry", ISTIO_NETWORKING, ServiceEntrySpec, "serviceentries", ("se",)),
        Kind("Gateway", ISTIO_NETWORKING, GatewaySpec, "gateways", ("gw",)),
        Kind("Sidecar", ISTIO_NETWORKING, SidecarSpec, "sidecars"),
        Kind("PeerAuthentication", ISTIO_SECURITY, PeerAuthenticationSpec,
             "peerauthentications", ("pa",)),
        Kind("AuthorizationPolicy", ISTIO_SECURITY, AuthorizationPolicySpec,
             "authorizationpolicies", ("ap", "authz")),
        Kind("RequestAuthentication", ISTIO_SECURITY, RequestAuthenticationSpec,
             "requestauthentications", ("ra",)),
        Kind("ServiceLevelObjective", (TELEMETRY,), ServiceLevelObjectiveSpec,
             "servicelevelobjectives", ("slo", "slos")),
        Kind("RateLimitPolicy", (POLICY,), RateLimitPolicySpec, "ratelimitpolicies", ("rlp",)),
        Kind("TokenRevocation", (SHOAL_MESH,), TokenRevocationSpec, "tokenrevocations"),
        # Istio serves EnvoyFilter in v1alpha3 only
        Kind("EnvoyFilter", ("networking.istio.io/v1alpha3",), EnvoyFilterSpec,
             "envoyfilters", ("ef",)),
        # Gateway API (docs/adr/0035): mesh routes first
        Kind("HTTPRoute", gatewayapi.API_VERSIONS, gatewayapi.HTTPRouteSpec, "httproutes"),
        Kind("GRPCRoute", gatewayapi.API_VERSIONS, gatewayapi.GRPCRouteSpec, "grpcroutes"),
        Kind("ReferenceGrant", gatewayapi.REFERENCE_GRANT_VERSIONS,
             gatewayapi.ReferenceGrantSpec, "referencegrants", ("refgrant",)),
        # after Istio's Gateway: "gateway" and "gateways" stay Istio's (docs/adr/0039)
        Kind(f"Gateway.{gatewayapi.GROUP}", gatewayapi.API_VERSIONS, gatewayapi.GatewaySpec,
             "gateways", ("gtw",)),
        Kind("GatewayClass", gatewayapi.API_VERSIONS, gatewayapi.GatewayClassSpec,
             "gatewayclasses", ("gc",), cluster_scoped=True),
        Kind("Namespace", ("v1",), NamespaceSpec, "namespaces", ("ns",), cluster_scoped=True,
             spec_optional=True),
        Kind("TLSRoute", gatewayapi.TLS_ROUTE_VERSIONS, gatewayapi.TLSRouteSpec, "tlsroutes"),
        Kind("TCPRoute", gatewayapi.TCP_ROUTE_VERSIONS, gatewayapi.TCPRouteSpec, "tcproutes"),
    )
}
# The kinds of each document kind (two for ``Gateway``), told apart by apiVersion.
BY_DOCUMENT_KIND: dict[str, tuple[Kind, ...]] = {}
for _k in KINDS.values():
    BY_DOCUMENT_KIND[_k.document_kind] = (*BY_DOCUMENT_KIND.get(_k.document_kind, ()), _k)


def kind_of(document_kind_: str, api_version: str) -> Kind | None:
    """The kind of a document with this ``kind`` and ``apiVersion``: the one that takes
    the apiVersion, else the only one of that name (its apiVersion is then wrong), else
    None."""
    candidates = BY_DOCUMENT_KIND.get(document_kind_, ())
    for k in candidates:
        if api_version in k.api_versions:
            return k
    return candidates[0] if len(candidates) == 1 else None


def resolve_kind(name: str) -> Kind:
    """Find a kind by its name, plural or short alias, case-insensitively (like kubectl)."""
    wanted = name.lower()
    for kind in KINDS.values():
        if wanted in kind.names():
            return kind
    known = ", ".join(sorted(KINDS))
    raise NotFound(f"unknown kind {name!r} (known kinds: {known})")
