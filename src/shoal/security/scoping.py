"""Which security policies apply to a workload, and its effective mTLS mode per port.

Shared by the Envoy generators and the ``shoal authz check`` evaluator so both see the
same policies. Istio's scoping rules:

* a policy in a root namespace (``MeshConfig.policy_roots``: shoal's and Istio's
  ``istio-system``) without a selector is mesh-wide; in another namespace without a
  selector it is namespace-wide; with a selector it applies to the matching workloads of
  its namespace (AuthorizationPolicy and RequestAuthentication in a root namespace with
  a selector: matching workloads in every namespace; a PeerAuthentication there is
  ignored, as in Istio); a selector with no labels selects like none;
* PeerAuthentication: the most specific one wins (workload > namespace > mesh; oldest
  first among equals), ``UNSET`` inherits from the next level, ``portLevelMtls`` (workload
  policies only) overrides per port; nothing set means PERMISSIVE.
"""

from __future__ import annotations

from shoal.api.meta import Resource, oldest_first
from shoal.api.selector import selects
from shoal.registry.snapshot import MeshSnapshot, mtls_disabled
from shoal.security.model import MtlsMode, PeerAuthenticationSpec, WorkloadSelector


def _selects(selector: WorkloadSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    return selects(selector.match_labels, labels)


def has_selector(policy: Resource) -> bool:
    """A workload policy: a selector with labels (an empty one selects like none)."""
    selector: WorkloadSelector | None = policy.spec.selector
    return selector is not None and bool(selector.match_labels)


def root_selector_ignored(mesh: MeshSnapshot, policy: Resource) -> bool:
    """A PeerAuthentication with a selector in a root namespace: ignored, as in Istio."""
    return (policy.kind == "PeerAuthentication" and has_selector(policy)
            and policy.metadata.namespace in mesh.config.policy_roots)


def applies_to(mesh: MeshSnapshot, policy: Resource, workload: Resource) -> bool:
    """Does ``policy`` (AuthorizationPolicy, RequestAuthentication, PeerAuthentication)
    apply to ``workload``? The scoping rules of the module doc, in one place: the
    generators, ``shoal authz check`` and ``shoal analyze`` all ask here."""
    pns = policy.metadata.namespace
    if pns != workload.metadata.namespace and pns not in mesh.config.policy_roots:
        return False
    if root_selector_ignored(mesh, policy):
        return False
    return _selects(policy.spec.selector, workload.spec.labels)


def applicable(mesh: MeshSnapshot, kind: str, workload: Resource) -> list[Resource]:
    """Policies of ``kind`` (AuthorizationPolicy, RequestAuthentication) that apply to
    ``workload``, in (namespace, name) order."""
    return [r for r in mesh.of_kind(kind) if applies_to(mesh, r, workload)]


def _peer_levels(mesh: MeshSnapshot, workload: Resource) -> list[PeerAuthenticationSpec]:
    """Workload-, namespace- and mesh-level PeerAuthentications, most specific first."""
    roots = mesh.config.policy_roots
    wl: list[Resource] = []
    nsl: list[Resource] = []
    meshl: list[Resource] = []
    for r in mesh.of_kind("PeerAuthentication"):
        if not applies_to(mesh, r, workload):
            continue
        if has_selector(r):
            wl.append(r)
        elif r.metadata.namespace in roots:
            meshl.append(r)
        else:
            nsl.append(r)
    return [sorted(level, key=oldest_first)[0].spec for level in (wl, nsl, meshl) if level]


def mtls_mode(mesh: MeshSnapshot, workload: Resource, port: int) -> MtlsMode:
    """STRICT, PERMISSIVE or DISABLE for traffic to ``workload`` on ``port`` (the port
    where its sidecar receives). A workload whose sidecar has no identity (labelled
    ``security.shoal.io/tlsMode: disabled``) can only take plaintext: DISABLE."""
    if mtls_disabled(workload):
        return MtlsMode.DISABLE
    levels = _peer_levels(mesh, workload)
    if levels:
        port_level = levels[0].port_level_mtls.get(port)
        if port_level is not None and port_level.mode is not MtlsMode.UNSET:
            return port_level.mode
    for spec in levels:
        if spec.mtls is not None and spec.mtls.mode is not MtlsMode.UNSET:
            return spec.mtls.mode
    return MtlsMode.PERMISSIVE
