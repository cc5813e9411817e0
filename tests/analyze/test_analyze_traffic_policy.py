"""``shoal analyze`` on DestinationRule TLS origination and locality failover."""

from __future__ import annotations

from shoal.analyze import analyze
from shoal.api.parse import parse_yaml

BASE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: http,
          protocol: HTTP, targetPort: 443}]
"""


def findings(dr: str) -> list[tuple[str, str]]:
    text = BASE + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n" + dr
    return [(f.code, f.path) for f in analyze(parse_yaml(text))]


def test_origination_on_an_http_port_is_fine() -> None:
    assert findings("""metadata: {name: ext}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE}}]
""") == []


def test_origination_on_a_tls_port_is_double_tls() -> None:
    assert findings("""metadata: {name: ext}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: SIMPLE}}
""") == [("double-tls", "spec.trafficPolicy.tls.mode")]


def test_origination_to_a_mesh_service_replaces_mesh_mtls() -> None:
    assert findings("""metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {tls: {mode: SIMPLE}}}]
""") == [("mesh-mtls-replaced", "spec.subsets[0].trafficPolicy.tls.mode")]


def test_failover_without_outlier_detection() -> None:
    dr = """metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failoverPriority: [topology.istio.io/cluster]}}
"""
    assert findings(dr) == [("failover-without-outlier-detection",
                             "spec.trafficPolicy.loadBalancer.localityLbSetting")]
    assert findings(dr + "    outlierDetection: {consecutive5xxErrors: 3}\n") == []
