"""Config validation: every violation, with its document and field path."""

from __future__ import annotations

import pytest

from shoal.api import parse_yaml, resolve_kind
from shoal.errors import NotFound, ValidationError

SERVICE = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, protocol: http}]
"""


def violations(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        parse_yaml(text, "f.yaml")
    return [(v.path, v.message) for v in e.value.violations]


def test_valid_documents_parse_to_typed_specs() -> None:
    [svc] = parse_yaml(SERVICE)
    assert svc.kind == "Service"
    assert svc.metadata.namespace == "default"
    assert svc.spec.ports[0].port == 9080
    assert svc.spec.ports[0].protocol.is_http


def test_every_violation_is_reported_with_its_path() -> None:
    found = violations("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 60
    bogus: 1
  - route:
    - destination: {host: reviews}
      weight: 101
""")
    paths = dict(found)
    assert "weights sum to 110" in paths["spec.http[0].route"]
    assert paths["spec.http[0].bogus"] == "unknown field"
    assert "100" in paths["spec.http[1].route[0].weight"]


def test_unsupported_istio_field_is_named_not_ignored() -> None:
    found = violations("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    delegate: {name: reviews-routes}
""")
    assert found == [("spec.http[0].delegate",
                      "is not supported by shoal yet (see docs/reference for supported fields)")]


def test_violations_of_all_documents_are_collected() -> None:
    found = violations(SERVICE + """
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: Bad_Name}
spec: {address: not-an-ip, ports: {http: 70000}}
---
apiVersion: v9
kind: Gadget
metadata: {name: x}
spec: {}
""")
    paths = [p for p, _ in found]
    assert "metadata.name" in paths
    assert "spec.address" in paths
    assert "spec.ports" in paths
    assert "kind" in paths


def test_duplicate_document_in_one_apply_is_rejected() -> None:
    found = violations(SERVICE + "---" + SERVICE)
    assert found[0][0] == "metadata.name"
    assert "already appears" in found[0][1]


def test_string_match_needs_exactly_one_and_re2_only() -> None:
    found = violations("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /a, exact: /b}
    - headers: {end-user: {regex: "(?=x)"}}
    route: [{destination: {host: reviews}}]
""")
    assert ("spec.http[0].match[0].uri", "exactly one of exact, prefix or regex must be set") \
        in found
    assert any(p == "spec.http[0].match[1].headers.end-user.regex" for p, _ in found)


def test_invalid_yaml_is_one_clear_violation() -> None:
    found = violations("kind: [unclosed")
    assert found[0][1].startswith("invalid YAML")


def test_kinds_resolve_by_alias() -> None:
    assert resolve_kind("vs").name == "VirtualService"
    assert resolve_kind("DestinationRules").name == "DestinationRule"
    assert resolve_kind("svc").name == "Service"
    with pytest.raises(NotFound):
        resolve_kind("gadget")
