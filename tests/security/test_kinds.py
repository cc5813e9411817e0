"""Validation of the security kinds: field paths, unsupported fields named."""

from __future__ import annotations

import pytest

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError


def problems(spec: str, kind: str = "AuthorizationPolicy") -> str:
    with pytest.raises(ValidationError) as e:
        parse_yaml(f"apiVersion: security.istio.io/v1beta1\nkind: {kind}\n"
                   f"metadata: {{name: x}}\nspec: {spec}\n")
    return str(e.value)


def test_authorization_policy_errors_name_fields() -> None:
    assert "provider: is required with action CUSTOM" in problems("{action: CUSTOM}")
    assert "provider: only with action CUSTOM" in problems("{provider: {name: x}}")
    assert "spec.provider.name" in problems("{action: CUSTOM, provider: {name: ''}}")
    out = problems("{rules: [{when: [{key: 'request.nope', values: [a]}]}]}")
    assert "spec.rules[0].when[0]: unsupported key 'request.nope'" in out
    assert "spec.rules[0].to[0].operation.paths" in problems(
        "{rules: [{to: [{operation: {paths: ['/a*b']}}]}]}")
    assert "spec.rules[0].from[0].source.ipBlocks" in problems(
        "{rules: [{from: [{source: {ipBlocks: [nope]}}]}]}")


def test_peer_and_request_authentication_errors() -> None:
    assert "spec.mtls.mode" in problems("{mtls: {mode: MAYBE}}", "PeerAuthentication")
    assert "portLevelMtls needs a selector" in problems(
        "{portLevelMtls: {8080: {mode: DISABLE}}}", "PeerAuthentication")
    assert "exactly one of jwks or jwksUri" in problems(
        "{jwtRules: [{issuer: a}]}", "RequestAuthentication")
    assert "spec.jwtRules[0].jwksUri" in problems(
        "{jwtRules: [{issuer: a, jwksUri: 'ftp://x'}]}", "RequestAuthentication")


def test_valid_documents_round_trip() -> None:
    [r] = parse_yaml("""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: x}
spec:
  rules:
  - from: [{source: {principals: ["*"]}}]
    to: [{operation: {ports: [8080]}}]
""")
    assert r.dump()["spec"] == {"rules": [{"from": [{"source": {"principals": ["*"]}}],
                                           "to": [{"operation": {"ports": ["8080"]}}]}]}
