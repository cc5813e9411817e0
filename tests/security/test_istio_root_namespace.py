"""Istio's root namespace (docs/adr/0032): mesh-wide policies written for Istio, in
``istio-system``, apply mesh-wide as they do in shoal-system; the control plane's
``--istio-root-namespace ''`` turns that off."""

from __future__ import annotations

from dataclasses import replace

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.security.evaluate import Request, evaluate
from shoal.security.model import MtlsMode
from shoal.security.scoping import mtls_mode
from shoal.xds.generate.scope import sidecar_for

WORKLOAD = """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: web}, ports: {http: 8080}}
"""
# Istio's own files, as its docs have them
STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""
DENY_ALL = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec: {}
"""
SIDECAR = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ["./*"]}]
"""


def mesh(*docs: str, config: MeshConfig | None = None) -> MeshSnapshot:
    built = MeshSnapshot.build(parse_yaml("---\n".join((WORKLOAD, *docs))), revision=1)
    return replace(built, config=config) if config is not None else built


def web(m: MeshSnapshot):
    wl = m.workload("shop", "web-1")
    assert wl is not None
    return wl


def test_mesh_wide_strict_from_istio_system() -> None:
    m = mesh(STRICT)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.STRICT
    off = mesh(STRICT, config=MeshConfig(istio_root_namespace=""))
    assert mtls_mode(off, web(off), 8080) is MtlsMode.PERMISSIVE


def test_a_namespace_policy_still_beats_the_mesh_wide_one() -> None:
    ns = STRICT.replace("istio-system", "shop").replace("STRICT", "PERMISSIVE")
    m = mesh(STRICT, ns)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.PERMISSIVE


def test_mesh_wide_authorization_from_istio_system() -> None:
    m = mesh(DENY_ALL)  # an ALLOW policy without rules: Istio's "deny all"
    assert not evaluate(m, web(m), Request(port=8080, path="/", http=True)).allowed
    off = mesh(DENY_ALL, config=MeshConfig(istio_root_namespace=""))
    assert evaluate(off, web(off), Request(port=8080, path="/", http=True)).allowed


def test_mesh_wide_sidecar_from_istio_system() -> None:
    m = mesh(SIDECAR)
    found = sidecar_for(m, "shop", web(m))
    assert found is not None and found.metadata.namespace == "istio-system"


def test_both_roots_and_the_flag_says_which() -> None:
    assert MeshConfig().policy_roots == ("shoal-system", "istio-system")
    assert MeshConfig(istio_root_namespace="").policy_roots == ("shoal-system",)
    assert MeshConfig(root_namespace="istio-system").policy_roots == ("istio-system",)


def test_a_peer_authentication_with_a_selector_in_a_root_namespace_is_ignored() -> None:
    """As in Istio ("PeerAuthentication policies with workload selectors are ignored when
    deployed in the root namespace"); ``shoal analyze`` says so instead of counting the
    workloads it would select (the generators' own rule, security.scoping.applies_to)."""
    from shoal.analyze import analyze

    selected = STRICT.replace("spec: {mtls", "spec: {selector: {matchLabels: {app: web}}, mtls")
    m = mesh(selected)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.PERMISSIVE
    found = [(f.code, f.resource) for f in analyze(parse_yaml("---\n".join((WORKLOAD,
                                                                          selected))))]
    assert found == [("selector-ignored", "PeerAuthentication istio-system/default")]
    # in the workload's namespace the same policy is the workload's own
    local = selected.replace("istio-system", "shop")
    m = mesh(local)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.STRICT
    assert analyze(parse_yaml("---\n".join((WORKLOAD, local)))) == []


def test_a_selector_with_no_labels_selects_like_none() -> None:
    """``selector: {}`` (no matchLabels): a namespace-wide (or mesh-wide) policy, as
    Istio reads it, instead of one that applied to nothing."""
    ns_wide = STRICT.replace("istio-system", "shop").replace("spec: {mtls",
                                                             "spec: {selector: {}, mtls")
    m = mesh(ns_wide)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.STRICT
    mesh_wide = STRICT.replace("spec: {mtls", "spec: {selector: {}, mtls")
    m = mesh(mesh_wide)
    assert mtls_mode(m, web(m), 8080) is MtlsMode.STRICT
