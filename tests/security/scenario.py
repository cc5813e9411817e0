"""The mesh both the real-Envoy tests and the evaluator tests use (ports are filled in).

web-1 (sa web) serves four ports: STRICT http, PERMISSIVE http, DISABLE http (port-level
overrides of a workload STRICT policy) and STRICT tcp. alice and bob are callers.
"""

from __future__ import annotations

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot

ISSUER = "https://issuer.test"

MESH = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: strict, port: 9080}}
  - {{name: perm, port: 9081}}
  - {{name: plain, port: 9082}}
  - {{name: tcp, port: 9090, protocol: tcp}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: web-1, annotations: {{shoal.io/registered-by: agent}}}}
spec:
  address: 127.0.0.1
  labels: {{app: web}}
  serviceAccount: web
  ports: {{strict: {p1}, perm: {p2}, plain: {p3}, tcp: {p4}}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: alice-1, annotations: {{shoal.io/registered-by: agent}}}}
spec: {{address: 127.0.0.1, labels: {{app: alice}}, serviceAccount: alice}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: bob-1, annotations: {{shoal.io/registered-by: agent}}}}
spec: {{address: 127.0.0.1, labels: {{app: bob}}, serviceAccount: bob}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls: {{{p2}: {{mode: PERMISSIVE}}, {p3}: {{mode: DISABLE}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-some}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/deny*"], ports: ["{p1}", "{p2}", "{p3}"]}}}}]
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/bob]}}}}]
    to: [{{operation: {{ports: ["{p4}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-allow}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/alice]}}}}]
    to: [{{operation: {{paths: ["/alice*"]}}}}]
  - to: [{{operation: {{paths: ["/public*", "/deny*"]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/jwt*"]}}}}]
  - to: [{{operation: {{paths: ["/claims*"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [admins]}}]
  - to: [{{operation: {{ports: ["{p4}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit-deletes}}
spec:
  action: AUDIT
  rules: [{{to: [{{operation: {{methods: [DELETE]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  jwtRules:
  - issuer: {issuer}
    jwks: '{jwks}'
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
"""


def scenario_mesh(ports: tuple[int, int, int, int], jwks: str) -> MeshSnapshot:
    p1, p2, p3, p4 = ports
    text = MESH.format(p1=p1, p2=p2, p3=p3, p4=p4, issuer=ISSUER, jwks=jwks)
    return MeshSnapshot.build(parse_yaml(text), revision=1)


def alice() -> str:
    return "cluster.local/ns/default/sa/alice"


def bob() -> str:
    return "cluster.local/ns/default/sa/bob"
