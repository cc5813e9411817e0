"""The kinds shoal accepts: apiVersions, names, aliases and the spec model of each."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.api import gatewayapi
from shoal.api.envoyfilter import EnvoyFilterSpec
from shoal.api.gateway import GatewaySpec
from shoal.api.mesh import ServiceSpec, TokenRevocationSpec, WorkloadSpec
from shoal.api.meta import Model
from shoal.api.networking import DestinationRuleSpec, VirtualServiceSpec
from shoal.api.ratelimit import POLICY, RateLimitPolicySpec
from shoal.api.security import (
    AuthorizationPolicySpec,
    PeerAuthenticationSpec,
    RequestAuthenticationSpec,
)
from shoal.api.serviceentry import ServiceEntrySpec
from shoal.api.sidecar import SidecarSpec
from shoal.api.telemetry import TELEMETRY, ServiceLevelObjectiveSpec
from shoal.errors import NotFound

SHOAL_MESH = "mesh.shoal.io/v1alpha1"
ISTIO_NETWORKING = ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                    "networking.istio.io/v1alpha3")
ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")


@dataclass(frozen=True)
class Kind:
    name: str  # "VirtualService"
    api_versions: tuple[str, ...]  # accepted; the first is the one shoal writes
    spec: type[Model]
    plural: str
    aliases: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    def names(self) -> set[str]:
        return {self.name.lower(), self.plural, *self.aliases}


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
    )
}


def resolve_kind(name: str) -> Kind:
    """Find a kind by its name, plural or short alias, case-insensitively (like kubectl)."""
    wanted = name.lower()
    for kind in KINDS.values():
        if wanted in kind.names():
            return kind
    known = ", ".join(sorted(KINDS))
    raise NotFound(f"unknown kind {name!r} (known kinds: {known})")
