"""The explainer agrees with Envoy: the same scenarios as test_envoy_security, evaluated."""

from __future__ import annotations

import pytest

from shoal.registry.snapshot import MeshSnapshot
from shoal.security.check import check
from shoal.security.evaluate import Request, evaluate

from .scenario import ISSUER, alice, bob, scenario_mesh

PORTS = (15001, 15002, 15003, 15004)
STRICT, PERM, PLAIN, TCP = PORTS


@pytest.fixture(scope="module")
def mesh() -> MeshSnapshot:
    return scenario_mesh(PORTS, '{"keys": []}')


def decide(mesh: MeshSnapshot, port: int, path: str = "/", principal: str | None = None,
           **kw) -> tuple[bool, str | None, int | None]:
    wl = mesh.workload("default", "web-1")
    assert wl is not None
    d = evaluate(mesh, wl, Request(port=port, path=path, principal=principal,
                                   http=port != TCP, **kw))
    return d.allowed, d.policy, d.rule


def test_peer_authentication(mesh: MeshSnapshot) -> None:
    assert decide(mesh, STRICT, "/public") == (False, "PeerAuthentication", None)
    assert decide(mesh, STRICT, "/public", alice())[0]
    assert decide(mesh, PERM, "/public")[0]
    assert decide(mesh, PLAIN, "/public")[0]


def test_deny(mesh: MeshSnapshot) -> None:
    assert decide(mesh, STRICT, "/deny/x", alice()) == (False, "default/deny-some", 0)
    assert decide(mesh, PERM, "/deny") == (False, "default/deny-some", 0)
    assert decide(mesh, STRICT, "/public/deny", alice()) == (True, "default/web-allow", 1)


def test_allow_principal(mesh: MeshSnapshot) -> None:
    assert decide(mesh, STRICT, "/alice/1", alice()) == (True, "default/web-allow", 0)
    assert decide(mesh, STRICT, "/alice/1", bob()) == (False, None, None)
    assert decide(mesh, PERM, "/alice/1") == (False, None, None)
    assert decide(mesh, PLAIN, "/alice/1", alice()) == (False, None, None)  # no mTLS there
    assert decide(mesh, STRICT, "/other", alice()) == (False, None, None)


def test_tcp(mesh: MeshSnapshot) -> None:
    assert decide(mesh, TCP, principal=alice()) == (True, "default/web-allow", 4)
    assert decide(mesh, TCP, principal=bob()) == (False, "default/deny-some", 1)


def test_jwt_and_claims(mesh: MeshSnapshot) -> None:
    token = {"iss": ISSUER, "sub": "user-1"}
    assert decide(mesh, PERM, "/jwt") == (False, None, None)
    assert decide(mesh, PERM, "/jwt", claims=token) == (True, "default/web-allow", 2)
    admins = {**token, "groups": ["admins", "x"]}
    assert decide(mesh, PERM, "/claims", claims=admins) == (True, "default/web-allow", 3)
    assert not decide(mesh, PERM, "/claims", claims={**token, "groups": ["users"]})[0]
    assert not decide(mesh, PERM, "/claims", claims={**token, "groups": "users"})[0]


def test_audit_is_reported_not_enforced(mesh: MeshSnapshot) -> None:
    wl = mesh.workload("default", "web-1")
    assert wl is not None
    d = evaluate(mesh, wl, Request(port=PERM, method="DELETE", path="/public"))
    assert d.allowed and d.audited == ("default/audit-deletes rule 0",)


def test_check_resolves_workloads(mesh: MeshSnapshot) -> None:
    [v] = check(mesh, "alice-1", "web", port=9080, path="/alice")
    assert (v.workload, v.port, v.mtls, v.decision.allowed) == ("default/web-1", STRICT, True,
                                                                 True)
    [v] = check(mesh, "bob-1", "web.default", port=9080, path="/alice")
    assert not v.decision.allowed
    [v] = check(mesh, "alice-1", "web", port=9082, path="/alice")
    assert not v.mtls and not v.decision.allowed


def test_gateway_requests_from_outside() -> None:
    """`shoal authz check --gateway`: a request from outside the mesh to a gateway, under
    the policies that select the gateway (Istio's ingress JWT task)."""
    from shoal.api.parse import parse_yaml
    from shoal.security.check import check_gateway

    mesh = MeshSnapshot.build(parse_yaml("""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: ingress-1}
spec: {address: 127.0.0.1, labels: {istio: ingressgateway}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-ingress, namespace: shoal-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{from: [{source: {notRequestPrincipals: ["*"]}}]}]
"""), revision=1)
    denied = check_gateway(mesh, "ingress-1", port=8080, path="/productpage")
    assert not denied.decision.allowed
    assert denied.decision.policy == "shoal-system/frontend-ingress"
    allowed = check_gateway(mesh, "ingress-1", port=8080, path="/productpage",
                            claims={"iss": "testing@secure.istio.io", "sub": "u"})
    assert allowed.decision.allowed


def test_custom_policy_defers_to_its_authorizer() -> None:
    """A matching CUSTOM rule: the decision holds only if the provider allows it."""
    from shoal.api.parse import parse_yaml

    mesh = MeshSnapshot.build(parse_yaml("""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1}
spec: {address: 127.0.0.1, labels: {app: web}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
"""), revision=1)
    wl = mesh.workload("default", "web-1")
    assert wl is not None
    checked = evaluate(mesh, wl, Request(port=80, path="/admin/x"))
    assert checked.allowed and checked.external == "opa"
    assert checked.reason.startswith("if extension provider 'opa' allows it")
    assert checked.as_dict()["external"] == "opa"
    assert evaluate(mesh, wl, Request(port=80, path="/public")).external is None
