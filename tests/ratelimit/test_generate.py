"""RateLimitPolicy -> inbound filters: validation, the generated config, Envoy accepts it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as local_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as global_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.ratelimit import plugin as rl
from shoal.ratelimit.identity import service_identity
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import CLUSTER
from tests.generate.conftest import GOLDEN_PROXIES, http_connection_managers, load_mesh
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap

POLICY = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: reviews}
spec:
  host: reviews
  mode: %s
  failureMode: closed
  limits:
  - {name: all, requestsPerUnit: 100, unit: second}
  - name: per-key
    match: {method: {exact: GET}, path: {prefix: /reviews},
            source: {principals: [cluster.local/ns/default/sa/productpage]}}
    perHeader: x-api-key
    requestsPerUnit: 5
    unit: minute
  quotas:
  - {name: daily, perHeader: x-api-key, requests: 10000}
"""


def filters_of(snap, name_prefix: str) -> list[hcm_pb2.HttpFilter]:
    return [h for hcm in http_connection_managers(snap) for h in hcm.http_filters
            if h.name.startswith(name_prefix)]


def test_validation_names_fields() -> None:
    bad = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: bad}
spec:
  host: "*"
  mode: sometimes
  limits: [{name: a, requestsPerUnit: 0, unit: week, perHeader: X-Key}]
  quotas: [{name: a, requests: 5, unit: second}]
"""
    with pytest.raises(ValidationError) as e:
        parse_yaml(bad)
    text = str(e.value) + repr(getattr(e.value, "violations", ""))
    for path in ("spec.host", "spec.mode", "spec.limits[0].requestsPerUnit",
                 "spec.limits[0].unit", "spec.limits[0].perHeader", "spec.quotas[0].unit"):
        assert path in text, (path, text)


@pytest.mark.parametrize("mode", ["local", "global"])
def test_filters_on_inbound_of_targeted_service_only(mode: str) -> None:
    ctx = GenerationContext(load_mesh(POLICY % mode))
    reviews = generate(ctx, GOLDEN_PROXIES["reviews-v2.default"])
    product = generate(ctx, GOLDEN_PROXIES["productpage-v1.default"])
    assert not filters_of(product, "envoy.filters.http.local_ratelimit")
    assert not filters_of(product, "envoy.filters.http.ratelimit")
    glob = filters_of(reviews, rl.GLOBAL_FILTER)
    assert glob
    cfg = global_pb2.RateLimit()
    glob[0].typed_config.Unpack(cfg)
    assert cfg.failure_mode_deny and cfg.domain == "shoal"
    assert cfg.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "xds_cluster"
    ids = [r.actions[0].generic_key.descriptor_value for r in cfg.rate_limits]
    local = filters_of(reviews, rl.LOCAL_FILTER)
    if mode == "global":
        assert ids == ["default/reviews/all", "default/reviews/per-key",
                       "default/reviews/daily"]
        assert not local
    else:  # local limits in the sidecar; the quota still goes to the service
        assert ids == ["default/reviews/daily"]
        lcfg = local_pb2.LocalRateLimit()
        local[0].typed_config.Unpack(lcfg)
        assert [d.token_bucket.max_tokens for d in lcfg.descriptors] == [100, 5]
        assert lcfg.descriptors[1].entries[-1].key == "x-api-key"
        assert lcfg.descriptors[1].entries[-1].value == ""


def test_separate_service_gets_a_cluster() -> None:
    base = load_mesh(POLICY % "global")
    mesh = MeshSnapshot.build(base.resources, 7,
                              replace(MeshConfig(), ratelimit_address="127.0.0.1:15090"))
    snap = generate(GenerationContext(mesh), GOLDEN_PROXIES["reviews-v2.default"])
    assert "ratelimit" in snap.get(CLUSTER).items
    cfg = global_pb2.RateLimit()
    filters_of(snap, rl.GLOBAL_FILTER)[0].typed_config.Unpack(cfg)
    assert cfg.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "ratelimit"


RLS_ID = "spiffe://cluster.local/ns/shoal-system/sa/ratelimit"


def test_separate_service_with_an_identity_is_reached_over_mtls() -> None:
    base = load_mesh(POLICY % "global")
    plain = MeshSnapshot.build(base.resources, 7,
                               replace(MeshConfig(), ratelimit_address="127.0.0.1:15090"))
    cluster = generate(GenerationContext(plain), GOLDEN_PROXIES["reviews-v2.default"]
                       ).get(CLUSTER).items["ratelimit"]
    assert not cluster.transport_socket_matches  # --insecure-plaintext (development)
    mesh = MeshSnapshot.build(base.resources, 7, replace(
        MeshConfig(), ratelimit_address="127.0.0.1:15090", ratelimit_identity=RLS_ID))
    cluster = generate(GenerationContext(mesh), GOLDEN_PROXIES["reviews-v2.default"]
                       ).get(CLUSTER).items["ratelimit"]
    (match,) = cluster.transport_socket_matches
    assert not match.match.fields  # every endpoint
    tls = tls_pb2.UpstreamTlsContext()
    match.transport_socket.typed_config.Unpack(tls)
    common = tls.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "ROOTCA"
    sans = combined.default_validation_context.match_typed_subject_alt_names
    assert [(s.san_type, s.matcher.exact) for s in sans] == [
        (common_pb2.SubjectAltNameMatcher.URI, RLS_ID)]
    assert list(common.alpn_protocols) == ["h2"]


def test_identity_option_takes_ns_sa_or_a_spiffe_id() -> None:
    assert service_identity("shoal-system/ratelimit", "cluster.local") == RLS_ID
    assert service_identity(RLS_ID, "other.td") == RLS_ID
    for bad in ("ratelimit", "spiffe://x/ns/a", "NS/SA!"):
        with pytest.raises(ValueError):
            service_identity(bad, "cluster.local")


def test_memoized_per_policy_set() -> None:
    ctx = GenerationContext(load_mesh(POLICY % "global"))
    wl = ctx.mesh.workload("default", "reviews-v2")
    assert rl.inbound_extras(ctx, wl) is rl.inbound_extras(ctx, wl)


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize("mode", ["local", "global"])
def test_envoy_accepts(mode: str, tmp_path: Path) -> None:
    base = load_mesh(POLICY % mode)
    mesh = MeshSnapshot.build(base.resources, 7, replace(
        MeshConfig(), ratelimit_address="127.0.0.1:15090", ratelimit_identity=RLS_ID))
    snap = generate(GenerationContext(mesh), GOLDEN_PROXIES["reviews-v2.default"])
    boot = static_bootstrap(snap, "reviews-v2.default")
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
