"""Gateway API references to kinds shoal cannot use are stored, not refused (the spec's
choice; docs/adr/0040): a backend of another kind than Service, ReferenceGrant entries
for other groups and kinds. Their shapes are still checked, with their field paths, and
what shoal cannot honour at all is still refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.api import parse_yaml
from shoal.api.gatewayapi import BackendRef, ReferenceGrantSpec
from shoal.errors import ValidationError
from shoal.registry import gamma

# the Gateway API's conformance files, read where they are (never copied into the project)
SUITE = Path(__file__).resolve().parents[3] / "shared" / "gateway-api-conformance" \
    / "conformance" / "tests"
FILES = ("httproute-invalid-backendref-unknown-kind.yaml",
         "httproute-invalid-reference-grant.yaml",
         "httproute-partially-invalid-via-invalid-reference-grant.yaml")


def violations(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        parse_yaml(text, "f.yaml")
    return [(v.path, v.message) for v in e.value.violations]


@pytest.mark.parametrize("name", FILES)
def test_the_conformance_files_are_accepted_as_they_are(name: str) -> None:
    """What an apply does with them: parse and validate, then admission's check that
    each route translates. Nothing is refused."""
    path = SUITE / name
    if not path.is_file():
        pytest.skip(f"no conformance suite at {SUITE}")
    resources = parse_yaml(path.read_text(), name)
    assert resources
    for r in resources:
        if r.kind in gamma.KINDS_ROUTES:
            assert gamma.check_translation(r) == [], r.key


def route(backend: str, kind: str = "HTTPRoute") -> str:
    version = "v1" if kind != "TLSRoute" else "v1alpha2"
    return f"""apiVersion: gateway.networking.k8s.io/{version}
kind: {kind}
metadata: {{name: r}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - backendRefs: [{backend}]
"""


@pytest.mark.parametrize("backend", [
    '{group: "", kind: UnknownKind, name: foo}',  # no port: it is a Service's need
    "{group: example.com, kind: UnknownKind, name: foo, port: 8080}",
    "{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}",
    "{group: multicluster.x-k8s.io, kind: ServiceImport, name: foo, port: 80}",
    "{group: example.com, kind: Service, name: foo, port: 80}",  # a Service of another API
])
def test_a_backend_of_another_kind_is_stored(backend: str) -> None:
    for kind in ("HTTPRoute", "GRPCRoute", "TLSRoute"):
        [r] = parse_yaml(route(backend, kind))
        [ref] = r.spec.rules[0].backend_refs
        assert not ref.is_service
        if kind != "TLSRoute":
            assert gamma.check_translation(r) == []


@pytest.mark.parametrize(("backend", "path", "says"), [
    ("{name: x}", "spec.rules[0].backendRefs[0]", "port: is required for a Service"),
    ('{group: "", kind: Service, name: x}', "spec.rules[0].backendRefs[0]", "port: is required"),
    ("{group: Example.COM, kind: Foo, name: x}", "spec.rules[0].backendRefs[0].group",
     "is not an API group"),
    ("{group: a..b, kind: Foo, name: x}", "spec.rules[0].backendRefs[0].group",
     "is not an API group"),
    ("{kind: 'Not A Kind', name: x, port: 1}", "spec.rules[0].backendRefs[0].kind",
     "is not a kind"),
    ("{kind: '', name: x, port: 1}", "spec.rules[0].backendRefs[0].kind", "is not a kind"),
    (f"{{kind: K{'x' * 63}, name: x, port: 1}}", "spec.rules[0].backendRefs[0].kind",
     "at most 63"),
    ("{kind: Foo, name: '', port: 1}", "spec.rules[0].backendRefs[0].name", "at least 1"),
    ("{name: x, namespace: Not_A_Namespace, port: 1}", "spec.rules[0].backendRefs[0]",
     "namespace: not a namespace name"),
    ("{name: x, port: 1, weight: -1}", "spec.rules[0].backendRefs[0].weight",
     "greater than or equal to 0"),
    ("{kind: Foo, name: x, filters: [{type: URLRewrite, urlRewrite: {hostname: h}}]}",
     "spec.rules[0].backendRefs[0]", "on a backend are not supported by shoal yet"),
])
def test_backend_shapes_are_still_refused_with_their_path(backend: str, path: str,
                                                          says: str) -> None:
    found = violations(route(backend))
    assert any(p == path and says in m for p, m in found), found


def test_what_shoal_cannot_honour_is_still_refused_by_name() -> None:
    cors = route("{name: x, port: 1}").replace(
        "  - backendRefs:", "  - filters: [{type: CORS}]\n    backendRefs:")
    assert any("CORS is not supported" in m for _, m in violations(cors))


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: shop}
spec:
  from: [%s]
  to: [%s]
"""


@pytest.mark.parametrize(("from_", "to"), [
    ("{group: gateway.networking.k8s.io, kind: Gateway, namespace: front}",
     '{group: "", kind: Secret}'),
    ("{group: not-the-group-youre-looking-for, kind: HTTPRoute, namespace: front}",
     '{group: "", kind: Service, name: web}'),
    ("{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}",
     "{group: not-the-group-youre-looking-for, kind: Service, name: web}"),
    ("{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}",
     '{group: "", kind: ConfigMap, name: web}'),
    ("{group: example.com, kind: Widget, namespace: front}",
     "{group: example.com, kind: Gadget}"),
])
def test_a_grant_for_other_groups_and_kinds_is_stored(from_: str, to: str) -> None:
    [g] = parse_yaml(GRANT % (from_, to))
    assert g.kind == "ReferenceGrant"
    assert not g.spec.allows("HTTPRoute", "front", "Service", "web")


@pytest.mark.parametrize(("from_", "to", "path", "says"), [
    ("{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: Front_End}",
     '{group: "", kind: Service}', "spec.from[0].namespace", "not a namespace name"),
    ("{group: gateway.networking.k8s.io, kind: 'HTTP Route', namespace: front}",
     '{group: "", kind: Service}', "spec.from[0].kind", "is not a kind"),
    ("{group: Gateway.Networking, kind: HTTPRoute, namespace: front}",
     '{group: "", kind: Service}', "spec.from[0].group", "is not an API group"),
    ("{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}",
     '{group: "", kind: Service, name: ""}', "spec.to[0].name", "at least 1"),
    ("{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: front}",
     '{group: "", kind: "1Service"}', "spec.to[0].kind", "is not a kind"),
    ("{group: gateway.networking.k8s.io, namespace: front}",
     '{group: "", kind: Service}', "spec.from[0].kind", "required"),
])
def test_grant_shapes_are_still_refused_with_their_path(from_: str, to: str, path: str,
                                                        says: str) -> None:
    found = violations(GRANT % (from_, to))
    assert any(p == path and says.lower() in m.lower() for p, m in found), found


def test_a_grant_allows_exactly_the_pairs_it_names() -> None:
    spec = ReferenceGrantSpec.model_validate({
        "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                  "namespace": "front"},
                 {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                  "namespace": "edge"}],
        "to": [{"group": "", "kind": "Service", "name": "web"},
               {"group": "core", "kind": "Secret"}]})
    assert spec.allows("HTTPRoute", "front", "Service", "web")
    assert spec.allows("Gateway", "edge", "Secret", "any-cert")
    # each from with each to (the spec's cross product), nothing else
    assert spec.allows("HTTPRoute", "front", "Secret", "x")
    assert not spec.allows("HTTPRoute", "front", "Service", "other")
    assert not spec.allows("GRPCRoute", "front", "Service", "web")
    assert not spec.allows("HTTPRoute", "edge2", "Service", "web")


def test_a_backend_says_whether_it_is_a_service() -> None:
    assert BackendRef(name="a", port=1).is_service
    assert BackendRef(group="core", kind="Service", name="a", port=1).is_service
    other = BackendRef(group="example.com", kind="UnknownKind", name="foo")
    assert not other.is_service and other.group_kind == "example.com/UnknownKind"
    assert BackendRef(kind="UnknownKind", name="foo").group_kind == "core/UnknownKind"
