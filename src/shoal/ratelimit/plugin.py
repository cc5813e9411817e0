"""Rate-limit plugin of inbound HTTP ports (RateLimitPolicy): Envoy's local token buckets
(``envoy.filters.http.local_ratelimit``) and the global check against the rate-limit
service (``envoy.filters.http.ratelimit``), one filter per policy, after the security
filters. Descriptors come from the filters' own ``rate_limits`` actions
(see :mod:`shoal.ratelimit.rules` for their shape), so route tables are untouched.

The service is reached through the bootstrap's ``xds_cluster`` when the control plane
runs it (the default), or through a generated ``ratelimit`` cluster when
``MeshConfig.ratelimit_address`` names a separate one (docs/adr/0010-rate-limiting.md).
``xds_cluster`` is already the mesh's mTLS to the control plane (the workload
certificate, SDS ``default``; the control plane verified against ``ROOTCA``; every
instance of an HA control plane), and the service answers only the identities it proves
(docs/adr/0025). The separate service holds a mesh identity of its own
(``MeshConfig.ratelimit_identity``): the ``ratelimit`` cluster is mTLS with the workload
certificate (SDS ``default``), the service verified against ``ROOTCA`` and its SPIFFE ID.
Without one it is a development service (``--insecure-plaintext``): plaintext.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.ratelimit.v3 import rls_pb2 as rls_config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as global_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from shoal.api.meta import Resource
from shoal.ratelimit.model import FailureMode, RateLimitPolicySpec
from shoal.ratelimit.rules import DOMAIN, KIND, MATCH_KEY, RULE_KEY, Rule, policy_rules
from shoal.xds.generate import matches
from shoal.xds.generate.base import Generator, Part, ProxyView
from shoal.xds.generate.protocol import (
    HcmExtras,
    duration,
    http2_protocol_options,
    pack,
    socket_address,
)
from shoal.xds.generate.tls import ALPN_H2, mesh_service_tls, tls_socket
from shoal.xds.types import XDS_CLUSTER

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

LOCAL_FILTER = "envoy.filters.http.local_ratelimit"
GLOBAL_FILTER = "envoy.filters.http.ratelimit"
RLS_CLUSTER = "ratelimit"
RLS_MTLS = "ratelimit-mtls"  # the transport socket match of its mTLS
CONTROL_PLANE_CLUSTER = XDS_CLUSTER  # the bootstrap's control-plane cluster
CHECK_TIMEOUT = 1.0  # seconds a sidecar waits for the service before failureMode applies
XFCC = "x-forwarded-client-cert"
MAX_DYNAMIC = 10_000  # local per-header buckets kept per descriptor (LRU)

_memo: weakref.WeakKeyDictionary[GenerationContext, dict[tuple[object, ...], HcmExtras]] = (
    weakref.WeakKeyDictionary())


def policies_for(ctx: GenerationContext, workload: Resource) -> list[Resource]:
    """RateLimitPolicies whose ``host`` is a service selecting ``workload``."""
    mesh = ctx.mesh
    mine = {s.key for s in ctx.services_of_workload(workload.metadata.namespace,
                                                     workload.metadata.name)}
    out = []
    for policy in mesh.of_kind(KIND):
        service = mesh.resolve_host(policy.spec.host, policy.metadata.namespace)
        if service is not None and service.key in mine:
            out.append(policy)
    return out


def inbound_extras(ctx: GenerationContext, workload: Resource) -> HcmExtras:
    """The rate-limit filters of ``workload``'s inbound HTTP ports, memoized per policy
    set (workloads under the same policies share the same objects)."""
    policies = policies_for(ctx, workload)
    memo = _memo.setdefault(ctx, {})
    key = tuple(p.key for p in policies)
    if key not in memo:
        filters: list[hcm_pb2.HttpFilter] = []
        for policy in policies:
            filters += policy_filters(policy, service_cluster(ctx))
        memo[key] = HcmExtras(http_filters=tuple(filters))
    return memo[key]


def service_cluster(ctx: GenerationContext) -> str:
    return RLS_CLUSTER if _address(ctx) else CONTROL_PLANE_CLUSTER


def _address(ctx: GenerationContext) -> str | None:
    return ctx.mesh.config.ratelimit_address


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    yield Part(clusters=clusters(ctx))


# the separate rate-limit service's cluster (the listeners' filters come with them)
GENERATOR = Generator("ratelimit", frozenset({KIND}), _parts)


def clusters(ctx: GenerationContext) -> Mapping[str, cluster_pb2.Cluster]:
    """The ``ratelimit`` cluster (HTTP/2) when a separate service is configured."""
    address = _address(ctx)
    if not address or not ctx.mesh.of_kind(KIND):
        return {}
    host, _, port = address.rpartition(":")
    lb_endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=socket_address(host.strip("[]") or "127.0.0.1", int(port))))
    cluster = cluster_pb2.Cluster(
        name=RLS_CLUSTER,
        type=cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration(1.0),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=RLS_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])]),
    )
    for name, value in http2_protocol_options().items():
        cluster.typed_extension_protocol_options[name].CopyFrom(value)
    identity = ctx.mesh.config.ratelimit_identity
    if identity:
        # mTLS to every endpoint (an empty match matches all), as a transport socket
        # *match* like the other mesh clusters (see telemetry's Zipkin cluster)
        cluster.transport_socket_matches.append(cluster_pb2.Cluster.TransportSocketMatch(
            name=RLS_MTLS, match=struct_pb2.Struct(),
            transport_socket=tls_socket(mesh_service_tls(identity, ALPN_H2))))
    return {RLS_CLUSTER: cluster}


# -- filters ---------------------------------------------------------------------------


def policy_filters(policy: Resource, cluster: str) -> list[hcm_pb2.HttpFilter]:
    spec: RateLimitPolicySpec = policy.spec
    rules = policy_rules(policy)
    local = [r for r in rules if not r.enforced_by_service]
    remote = [r for r in rules if r.enforced_by_service]
    name = f"{policy.metadata.namespace}.{policy.metadata.name}"
    out = []
    if local:
        out.append(hcm_pb2.HttpFilter(
            name=f"{LOCAL_FILTER}.{name}", typed_config=pack(local_filter(name, local))))
    if remote:
        cfg = global_filter(name, remote, cluster, spec.failure_mode is FailureMode.CLOSED)
        out.append(hcm_pb2.HttpFilter(name=f"{GLOBAL_FILTER}.{name}", typed_config=pack(cfg)))
    return out


def rate_limit(rule: Rule) -> rc_pb2.RateLimit:
    """Actions producing the rule's descriptor; any unmet condition produces none."""
    a = rc_pb2.RateLimit.Action
    actions = [a(generic_key=a.GenericKey(descriptor_key=RULE_KEY, descriptor_value=rule.id))]
    for gate, headers in _gates(rule):
        actions.append(a(header_value_match=a.HeaderValueMatch(
            descriptor_key=MATCH_KEY, descriptor_value=gate,
            expect_match=wrappers_pb2.BoolValue(value=True),
            headers=headers)))
    if rule.per_header is not None:
        actions.append(a(request_headers=a.RequestHeaders(
            header_name=rule.per_header, descriptor_key=rule.per_header)))
    return rc_pb2.RateLimit(actions=actions)


def _gates(rule: Rule) -> list[tuple[str, list[rc_pb2.HeaderMatcher]]]:
    m = rule.match
    if m is None:
        return []
    out = []
    if m.method is not None:
        out.append(("method", [matches.header(":method", m.method)]))
    if m.path is not None:
        out.append(("path", [matches.header(":path", m.path)]))
    for name in sorted(m.headers):
        out.append((f"header.{name}", [matches.header(name, m.headers[name])]))
    if m.source is not None:
        # The caller's SPIFFE URI, as the inbound mTLS chain puts it in XFCC.
        alts = "|".join(re.escape(f"spiffe://{p}") for p in m.source.principals)
        pattern = f".*;URI=(?:{alts})(?:[;,].*)?"
        xfcc = string_pb2.StringMatcher(safe_regex=matches.regex(pattern))
        out.append(("source", [rc_pb2.HeaderMatcher(name=XFCC, string_match=xfcc)]))
    return out


def _bucket(limit: int, seconds: int) -> token_bucket_pb2.TokenBucket:
    return token_bucket_pb2.TokenBucket(
        max_tokens=limit, tokens_per_fill=wrappers_pb2.UInt32Value(value=limit),
        fill_interval=duration(seconds))


def _percent_100(key: str) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED),
        runtime_key=key)


def local_filter(name: str, rules: list[Rule]) -> local_pb2.LocalRateLimit:
    descriptors = []
    for rule in rules:
        entries = [common_pb2.RateLimitDescriptor.Entry(key=RULE_KEY, value=rule.id)]
        entries += [common_pb2.RateLimitDescriptor.Entry(key=MATCH_KEY, value=gate)
                    for gate, _ in _gates(rule)]
        if rule.per_header is not None:  # empty value: one bucket per distinct value
            entries.append(common_pb2.RateLimitDescriptor.Entry(key=rule.per_header, value=""))
        descriptors.append(common_pb2.LocalRateLimitDescriptor(
            entries=entries, token_bucket=_bucket(rule.limit, rule.window)))
    retry_after = min(r.window for r in rules)
    return local_pb2.LocalRateLimit(
        stat_prefix=f"local_rate_limit.{name}",
        filter_enabled=_percent_100(f"shoal.ratelimit.{name}.enabled"),
        filter_enforced=_percent_100(f"shoal.ratelimit.{name}.enforced"),
        descriptors=descriptors,
        rate_limits=[rate_limit(r) for r in rules],
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
        enable_x_ratelimit_headers=common_pb2.DRAFT_VERSION_03,
        max_dynamic_descriptors=wrappers_pb2.UInt32Value(value=MAX_DYNAMIC),
        response_headers_to_add=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="retry-after", value=str(retry_after)),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)],
    )


def global_filter(name: str, rules: list[Rule], cluster: str, deny_on_failure: bool
                  ) -> global_pb2.RateLimit:
    return global_pb2.RateLimit(
        domain=DOMAIN,
        stat_prefix=name,
        timeout=duration(CHECK_TIMEOUT),
        failure_mode_deny=deny_on_failure,
        rate_limit_service=_rls(cluster),
        enable_x_ratelimit_headers=global_pb2.RateLimit.DRAFT_VERSION_03,
        rate_limits=[rate_limit(r) for r in rules],
    )


def _rls(cluster: str) -> rls_config_pb2.RateLimitServiceConfig:
    return rls_config_pb2.RateLimitServiceConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)),
        transport_api_version=config_source_pb2.V3)
