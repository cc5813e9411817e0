"""Config validation: every violation, with its document and field path."""

from __future__ import annotations

import pytest

from shoal.api import parse_yaml, resolve_kind
from shoal.api.mesh import ServicePort, split_locality
from shoal.errors import NotFound, ValidationError
from shoal.registry.snapshot import MeshSnapshot

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


def test_durations_are_parsed_once_and_read_back_as_written() -> None:
    """A duration field holds its value in seconds, parsed where the document enters
    the API (generators never parse text again), and dumps back to the user's text."""
    [vs] = parse_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 1.5s
    retries: {attempts: 2, perTryTimeout: 250ms}
    route: [{destination: {host: reviews}}]
""")
    http = vs.spec.http[0]
    assert http.timeout.seconds == 1.5 and http.retries.per_try_timeout.seconds == 0.25
    dumped = vs.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["spec"]["http"][0]["timeout"] == "1.5s"
    assert dumped["spec"]["http"][0]["retries"]["perTryTimeout"] == "250ms"
    found = violations("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - {timeout: 0s, route: [{destination: {host: r}}]}
  - {timeout: 5, route: [{destination: {host: r}}]}
""")
    assert [p for p, m in found if "greater than zero" in m] == ["spec.http[0].timeout"], found
    assert [p for p, m in found if "duration string" in m] == ["spec.http[1].timeout"], found


@pytest.mark.parametrize(("text", "parts"), [
    ("", ("", "", "")), ("eu", ("eu", "", "")), ("eu/a", ("eu", "a", "")),
    ("eu/a/1", ("eu", "a", "1")),
])
def test_locality_text_has_one_parser(text: str, parts: tuple[str, str, str]) -> None:
    assert split_locality(text) == parts


def test_the_endpoint_port_rule_has_one_home() -> None:
    """A workload receives a service port on its own port of that name, else the
    service's targetPort, else the port (Services, ServiceEntries and inbound listeners
    all read ServicePort.endpoint_port)."""
    port = ServicePort(name="http", port=80, target_port=8080)
    assert port.endpoint_port({"http": 18080}) == 18080
    assert port.endpoint_port({"grpc": 18081}) == 8080
    assert ServicePort(name="http", port=80).endpoint_port({}) == 80
    mesh = MeshSnapshot.build(parse_yaml("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: tcp, number: 5432, protocol: TCP, targetPort: 15432}]
  endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2, ports: {tcp: 25432}}]
"""), revision=1)
    (service,) = mesh.services
    ports = sorted(ep.port for ep in mesh.endpoints(service, service.spec.ports[0]))
    assert ports == [15432, 25432]
