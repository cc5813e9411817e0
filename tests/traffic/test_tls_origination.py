"""TLS origination (DestinationRule tls SIMPLE / MUTUAL): the clusters generated (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds import secret_names
from shoal.xds.generate import GenerationContext, generate, outbound
from shoal.xds.generate.tls import TLS_SOCKET
from shoal.xds.types import CLUSTER
from tests.generate.conftest import proxy
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap

API = "outbound|80||api.example.com"
API_8443 = "outbound|8443||api.example.com"
WEB = "outbound|8080||web.default.svc.cluster.local"

MESH = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 443}
  - {number: 8443, name: grpc, protocol: GRPC}
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, labels: {shoal.io/registered-by: agent}}
spec: {address: 10.0.0.1, labels: {app: web}, ports: {http: 8080}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: client-1}
spec: {address: 10.0.0.2, labels: {app: client}, ports: {http: 8080}}
"""


def dr(host: str, policy: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {host.split('.')[0]}}}\nspec:\n  host: {host}\n"
            f"  trafficPolicy:\n{policy}")


def clusters(*rules: str) -> dict[str, cluster_pb2.Cluster]:
    mesh = MeshSnapshot.build(parse_yaml("\n---\n".join([MESH, *rules])), revision=1)
    return dict(outbound.table(GenerationContext(mesh)).clusters)


def upstream(c: cluster_pb2.Cluster) -> tls_pb2.UpstreamTlsContext:
    assert c.transport_socket.name == TLS_SOCKET
    assert not c.transport_socket_matches
    ctx = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.typed_config.Unpack(ctx)
    return ctx


def sans(ctx: tls_pb2.UpstreamTlsContext) -> list[tuple[int, str]]:
    v = ctx.common_tls_context.combined_validation_context.default_validation_context
    return [(m.san_type, m.matcher.exact) for m in v.match_typed_subject_alt_names]


def test_simple_verifies_the_host_with_the_given_roots() -> None:
    c = clusters(dr("api.example.com", "    tls: {mode: SIMPLE, caCertificates: /ca.pem}\n"))
    ctx = upstream(c[API])
    assert ctx.sni == "api.example.com"
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["http/1.1"]
    assert not common.tls_certificate_sds_secret_configs  # SIMPLE: no client certificate
    roots = common.combined_validation_context.validation_context_sds_secret_config
    assert roots.name == "file-root:/ca.pem"
    assert roots.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name
    # the server certificate must be for the SNI name
    assert sans(ctx) == [(common_pb2.SubjectAltNameMatcher.DNS, "api.example.com")]
    # nothing of the certificates in the config itself
    assert b"BEGIN" not in c[API].SerializeToString()


def test_simple_without_ca_uses_the_system_trust_store() -> None:
    ctx = upstream(clusters(dr("api.example.com", "    tls: {mode: SIMPLE}\n"))[API])
    roots = ctx.common_tls_context.combined_validation_context
    assert roots.validation_context_sds_secret_config.name == "file-root:system"


def test_mutual_presents_the_client_certificate_files() -> None:
    ctx = upstream(clusters(dr("api.example.com", """    tls:
      mode: MUTUAL
      clientCertificate: /certs/client.pem
      privateKey: /certs/client.key
      caCertificates: /certs/ca.pem
      caCrl: /certs/ca.crl
      sni: other.example.com
      subjectAltNames: [api.example.com, "spiffe://x/y", 192.0.2.10]
"""))[API])
    assert ctx.sni == "other.example.com"
    [cert] = ctx.common_tls_context.tls_certificate_sds_secret_configs
    assert cert.name == "file-cert:/certs/client.pem~/certs/client.key"
    roots = ctx.common_tls_context.combined_validation_context
    assert roots.validation_context_sds_secret_config.name == \
        "file-root:/certs/ca.pem~/certs/ca.crl"
    m = common_pb2.SubjectAltNameMatcher
    assert sans(ctx) == [(m.DNS, "api.example.com"), (m.URI, "spiffe://x/y"),
                         (m.IP_ADDRESS, "192.0.2.10")]
    parsed = secret_names.parse(cert.name)
    assert parsed is not None and (parsed.cert, parsed.key) == ("/certs/client.pem",
                                                                "/certs/client.key")


def test_insecure_skip_verify_has_no_validation() -> None:
    ctx = upstream(clusters(dr("api.example.com",
                               "    tls: {mode: SIMPLE, insecureSkipVerify: true}\n"))[API])
    assert not ctx.common_tls_context.HasField("combined_validation_context")
    assert not ctx.common_tls_context.HasField("validation_context_sds_secret_config")


def test_port_level_tls_and_grpc_alpn() -> None:
    c = clusters(dr("api.example.com", """    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE}
"""))
    assert not c[API].HasField("transport_socket")  # port 80: plaintext, as before
    assert list(upstream(c[API_8443]).common_tls_context.alpn_protocols) == ["h2"]


def test_origination_replaces_mesh_mtls() -> None:
    before = clusters()
    assert before[WEB].transport_socket_matches  # auto mTLS to the sidecar
    after = clusters(dr("web", "    tls: {mode: SIMPLE, caCertificates: /ca.pem}\n"))
    assert upstream(after[WEB]).sni == "web.default.svc.cluster.local"


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_origination_clusters(tmp_path: Path) -> None:
    rules = [dr("api.example.com", """    tls:
      mode: MUTUAL
      clientCertificate: /certs/client.pem
      privateKey: /certs/client.key
      caCertificates: /certs/ca.pem
      caCrl: /certs/ca.crl
      subjectAltNames: [api.example.com, "spiffe://x/y", 192.0.2.10]
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE, insecureSkipVerify: true}
"""), dr("web", "    tls: {mode: SIMPLE}\n")]
    mesh = MeshSnapshot.build(parse_yaml("\n---\n".join([MESH, *rules])), revision=1)
    snap = generate(GenerationContext(mesh), proxy("client-1"))
    assert {API, API_8443, WEB} <= set(snap.get(CLUSTER).items)
    res = envoy_validate(static_bootstrap(snap, "client-1.default"), tmp_path / "boot.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
