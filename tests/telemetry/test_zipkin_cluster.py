"""The sidecars' Zipkin collector cluster: mTLS to the control plane's agents' listener
with the workload certificate; without a mesh identity, no TLS (nothing to present) and
no wait for a certificate (docs/adr/0025). Envoy validates it with every golden proxy
(tests/generate/test_envoy_validate.py)."""

from __future__ import annotations

from dataclasses import replace

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.generate import telemetry as tm
from shoal.xds.types import CLUSTER
from tests.generate.conftest import http_connection_managers, load_mesh, proxy

NO_IDENTITY = """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: plain-1, namespace: default}
spec:
  address: 10.0.0.99
  labels: {app: plain, security.shoal.io/tlsMode: disabled}
"""


def test_zipkin_cluster_is_mtls_to_the_control_plane() -> None:
    cluster = tm._zipkin_cluster("10.1.2.3:15443")
    ep = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (ep.socket_address.address, ep.socket_address.port_value) == ("10.1.2.3", 15443)
    [match] = cluster.transport_socket_matches
    assert not match.match.fields  # every endpoint
    ctx = tls_pb2.UpstreamTlsContext()
    assert match.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == tm.COLLECTOR_HOST
    common = ctx.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "ROOTCA"
    [san] = combined.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == "shoal-control-plane"


def traced(mesh: MeshSnapshot, sampling: float = 1.0) -> MeshSnapshot:
    return replace(mesh, config=replace(mesh.config, trace_sampling=sampling))


def test_no_tracer_and_no_collector_by_default() -> None:
    """docs/adr/0031: tracing is off unless the control plane is given a sampling rate."""
    snap = generate(GenerationContext(load_mesh()), proxy("reviews-v2", app_ports={"http": 9081}))
    assert tm.ZIPKIN_CLUSTER not in snap.resources[CLUSTER].items
    hcms = list(http_connection_managers(snap))
    assert hcms and not any(h.HasField("tracing") for h in hcms)


def test_a_sampling_rate_turns_the_tracer_on_everywhere() -> None:
    snap = generate(GenerationContext(traced(load_mesh(), 0.0)),
                    proxy("reviews-v2", app_ports={"http": 9081}))
    assert tm.ZIPKIN_CLUSTER in snap.resources[CLUSTER].items
    hcms = list(http_connection_managers(snap))
    # 0 % still continues a caller's sampled trace: the tracer is there
    assert hcms and all(h.tracing.provider.name == tm.ZIPKIN_TRACER for h in hcms)
    assert {h.tracing.random_sampling.value for h in hcms} == {0.0}


def test_a_proxy_without_identity_gets_it_without_tls() -> None:
    ctx = GenerationContext(traced(load_mesh(NO_IDENTITY)))
    with_id = generate(ctx, proxy("reviews-v2", app_ports={"http": 9081}))
    without = generate(ctx, proxy("plain-1"))
    assert with_id.resources[CLUSTER].items[tm.ZIPKIN_CLUSTER].transport_socket_matches
    plain = without.resources[CLUSTER].items[tm.ZIPKIN_CLUSTER]
    assert not plain.transport_socket_matches and not plain.HasField("transport_socket")
