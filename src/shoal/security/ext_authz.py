"""AuthorizationPolicy ``action: CUSTOM`` -> Envoy's external authorization (ADR 0033).

Istio's design, so its files behave the same: the CUSTOM policies' rules become the
*shadow* rules of an RBAC filter, which marks a request matching one of them (dynamic
metadata ``ext_authz_shadow_effective_policy_id``); the ext_authz filter after it runs
only for marked requests (``filter_enabled_metadata``), so the authorizer is asked about
exactly the requests the policies select. Both come before the DENY and ALLOW filters:
CUSTOM is evaluated first.

The provider is an ``extensionProviders`` entry of the mesh config (envoyExtAuthzHttp or
envoyExtAuthzGrpc) whose ``service`` is a mesh service or ServiceEntry host; the filter
calls it through that service's outbound cluster (mTLS when it has a sidecar). What
cannot be honoured fails closed, never open: a provider missing from the mesh config, a
service or port that does not exist, two providers for one workload, or an HTTP provider
on a TCP port make every request (connection) the CUSTOM policies select get 403 (be
closed). ``shoal analyze`` says why (analyze/checks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as net_ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2

from shoal.api.meshconfig import ExtAuthzGrpc, ExtAuthzHttp, ExtensionProvider
from shoal.api.meta import Resource
from shoal.registry.snapshot import MeshSnapshot
from shoal.security import rbac
from shoal.security.model import Action
from shoal.xds.generate import names
from shoal.xds.generate.protocol import duration, pack

HTTP_EXT_AUTHZ = "envoy.filters.http.ext_authz"
NET_EXT_AUTHZ = "envoy.filters.network.ext_authz"
SHADOW_PREFIX = "ext_authz_"  # the shadow rules' stats and dynamic-metadata keys
POLICY_PREFIX = "ext-authz-"  # shadow policy names: what the ext_authz filter matches
DEFAULT_TIMEOUT_S = 600.0  # Istio's default (10m)


@dataclass(frozen=True)
class Resolved:
    """The provider of one workload's CUSTOM policies, or why there is none."""

    provider: ExtensionProvider | None
    cluster: str = ""
    authority: str = ""  # host:port of the provider's service
    error: str = ""


def custom(policies: Sequence[Resource]) -> list[Resource]:
    return [r for r in policies if r.spec.action is Action.CUSTOM]


def _host(service: str) -> tuple[str, str]:
    """Istio's ``[namespace/]host`` -> (namespace or "", host)."""
    ns, _, host = service.rpartition("/")
    return ns, host


def resolve_provider(mesh: MeshSnapshot, name: str) -> Resolved:
    provider = mesh.config.extension_provider(name)
    if provider is None:
        return Resolved(None, error=f"provider {name!r} is not in the mesh config's "
                                    "extensionProviders (shoal control-plane --mesh-config)")
    cfg = provider.ext_authz
    ns, host = _host(cfg.service)
    svc = mesh.resolve_host(host, ns or mesh.config.root_namespace)
    if svc is None:
        return Resolved(None, error=f"provider {name!r}: service {cfg.service!r} is "
                                    "neither a mesh service nor a ServiceEntry host")
    if not any(p.port == cfg.port for p in svc.spec.ports):
        return Resolved(None, error=f"provider {name!r}: service {cfg.service!r} has no "
                                    f"port {cfg.port}")
    fqdn = mesh.fqdn(svc)
    return Resolved(provider, names.outbound_cluster(cfg.port, None, fqdn), f"{fqdn}:{cfg.port}")


def resolve(mesh: MeshSnapshot, policies: Sequence[Resource]) -> Resolved:
    """The one provider the CUSTOM ``policies`` of a workload name (Istio allows one)."""
    wanted = sorted({r.spec.provider.name for r in custom(policies)})
    if len(wanted) > 1:
        return Resolved(None, error=f"CUSTOM policies name {len(wanted)} providers "
                                    f"{wanted}; a workload may use only one")
    return resolve_provider(mesh, wanted[0])


def provider_clusters(mesh: MeshSnapshot) -> frozenset[str]:
    """Outbound clusters of the providers CUSTOM policies name: every proxy keeps them,
    whatever its Sidecar scope."""
    wanted = {r.spec.provider.name for r in mesh.of_kind("AuthorizationPolicy")
              if r.spec.action is Action.CUSTOM}
    return frozenset(res.cluster for n in sorted(wanted)
                     if (res := resolve_provider(mesh, n)).provider is not None)


def _shadow(policies: Sequence[Resource], http: bool) -> rbac_pb2.RBAC:
    rules = rbac.envoy_rules(policies, Action.CUSTOM, http)
    out = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for name, policy in rules.policies.items():
        out.policies[POLICY_PREFIX + name].CopyFrom(policy)
    return out


def _enabled(filter_name: str) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=filter_name,
        path=[metadata_pb2.MetadataMatcher.PathSegment(
            key=SHADOW_PREFIX + "shadow_effective_policy_id")],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(
            prefix=POLICY_PREFIX)))


def _list(patterns: Sequence[str]) -> string_pb2.ListStringMatcher:
    """Istio's ``name`` / ``prefix*`` / ``*suffix`` header patterns, case-insensitive."""
    out = string_pb2.ListStringMatcher()
    for p in patterns:
        if p.endswith("*"):
            out.patterns.add(prefix=p[:-1], ignore_case=True)
        elif p.startswith("*"):
            out.patterns.add(suffix=p[1:], ignore_case=True)
        else:
            out.patterns.add(exact=p, ignore_case=True)
    return out


def _timeout(cfg: ExtAuthzHttp | ExtAuthzGrpc) -> duration_pb2.Duration:
    return duration(cfg.timeout.seconds if cfg.timeout else DEFAULT_TIMEOUT_S)


def _grpc_service(cfg: ExtAuthzGrpc, res: Resolved) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
            cluster_name=res.cluster, authority=res.authority),
        timeout=_timeout(cfg))


def http_ext_authz(res: Resolved) -> ext_authz_pb2.ExtAuthz:
    assert res.provider is not None
    cfg = res.provider.ext_authz
    out = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=cfg.fail_open,
        clear_route_cache=cfg.clear_route_cache,
        status_on_error=http_status_pb2.HttpStatus(code=int(cfg.status_on_error or 403)),
        filter_enabled_metadata=_enabled(rbac.HTTP_RBAC),
        stat_prefix="ext_authz")
    body = cfg.include_request_body_in_check
    if body is not None:
        out.with_request_body.CopyFrom(ext_authz_pb2.BufferSettings(
            max_request_bytes=body.max_request_bytes,
            allow_partial_message=body.allow_partial_message,
            pack_as_bytes=body.pack_as_bytes))
    if isinstance(cfg, ExtAuthzGrpc):
        out.grpc_service.CopyFrom(_grpc_service(cfg, res))
        return out
    out.http_service.CopyFrom(ext_authz_pb2.HttpService(
        server_uri=http_uri_pb2.HttpUri(uri=f"http://{res.authority}", cluster=res.cluster,
                                        timeout=_timeout(cfg)),
        path_prefix=cfg.path_prefix,
        authorization_request=ext_authz_pb2.AuthorizationRequest(headers_to_add=[
            base_pb2.HeaderValue(key=k, value=v)
            for k, v in sorted(cfg.include_additional_headers_in_check.items())])))
    response = out.http_service.authorization_response
    # an empty list is invalid in Envoy's config: leave a field unset for Envoy's default
    for target, patterns in ((response.allowed_upstream_headers,
                              cfg.headers_to_upstream_on_allow),
                             (response.allowed_client_headers,
                              cfg.headers_to_downstream_on_deny),
                             (response.allowed_client_headers_on_success,
                              cfg.headers_to_downstream_on_allow),
                             (out.allowed_headers, cfg.include_request_headers_in_check)):
        if patterns:
            target.CopyFrom(_list(patterns))
    return out


def http_filters(mesh: MeshSnapshot, policies: Sequence[Resource]
                 ) -> tuple[hcm_pb2.HttpFilter, ...]:
    """RBAC (shadow rules) + ext_authz for the CUSTOM ``policies`` of one workload, or an
    enforcing RBAC DENY of the same rules when the provider cannot be used."""
    mine = custom(policies)
    if not mine:
        return ()
    res = resolve(mesh, mine)
    if res.provider is None:
        deny = rbac.envoy_rules(mine, Action.CUSTOM, http=True)
        return (hcm_pb2.HttpFilter(name=rbac.HTTP_RBAC, typed_config=pack(http_rbac_pb2.RBAC(
            rules=deny, rules_stat_prefix=SHADOW_PREFIX + "unavailable."))),)
    shadow = http_rbac_pb2.RBAC(shadow_rules=_shadow(mine, http=True),
                                shadow_rules_stat_prefix=SHADOW_PREFIX)
    return (hcm_pb2.HttpFilter(name=rbac.HTTP_RBAC, typed_config=pack(shadow)),
            hcm_pb2.HttpFilter(name=HTTP_EXT_AUTHZ, typed_config=pack(http_ext_authz(res))))


def network_filters(mesh: MeshSnapshot, policies: Sequence[Resource], stat_prefix: str
                    ) -> tuple[listener_components_pb2.Filter, ...]:
    """TCP ports: a gRPC provider checks each connection the CUSTOM policies select; an
    HTTP provider cannot, so those connections are closed (fail closed)."""
    mine = custom(policies)
    if not mine:
        return ()
    res = resolve(mesh, mine)
    prefix = f"{stat_prefix}.{SHADOW_PREFIX}"
    if res.provider is None or not isinstance(res.provider.ext_authz, ExtAuthzGrpc):
        deny = rbac.envoy_rules(mine, Action.CUSTOM, http=False)
        return (listener_components_pb2.Filter(name=rbac.NET_RBAC, typed_config=pack(
            net_rbac_pb2.RBAC(rules=deny, stat_prefix=prefix + "unavailable."))),)
    cfg = res.provider.ext_authz
    shadow = net_rbac_pb2.RBAC(shadow_rules=_shadow(mine, http=False), stat_prefix=prefix,
                               shadow_rules_stat_prefix=SHADOW_PREFIX)
    check = net_ext_authz_pb2.ExtAuthz(
        stat_prefix=prefix, grpc_service=_grpc_service(cfg, res),
        failure_mode_allow=cfg.fail_open, transport_api_version=config_source_pb2.V3,
        filter_enabled_metadata=_enabled(rbac.NET_RBAC))
    return (listener_components_pb2.Filter(name=rbac.NET_RBAC, typed_config=pack(shadow)),
            listener_components_pb2.Filter(name=NET_EXT_AUTHZ, typed_config=pack(check)))
