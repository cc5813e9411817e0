"""Which security policies apply to a workload, and its effective mTLS mode per port.

Shared by the Envoy generators and the ``shoal authz check`` evaluator so both see the
same policies. Istio's scoping rules:

* a policy in a root namespace (``MeshConfig.policy_roots``: shoal's and Istio's
  ``istio-system``) without a selector is mesh-wide; in another namespace without a
  selector it is namespace-wide; with a selector it applies to the matching workloads of
  its namespace (AuthorizationPolicy and RequestAuthentication in a root namespace with
  a selector: matching workloads in every namespace);
* PeerAuthentication: the most specific one wins (workload > namespace > mesh; oldest
  first among equals), ``UNSET`` inherits from the next level, ``portLevelMtls`` (workload
  policies only) overrides per port; nothing set means PERMISSIVE.
"""

from __future__ import annotations

from shoal.api.meta import Resource, oldest_first
from shoal.api.security import MtlsMode, PeerAuthenticationSpec, WorkloadSelector
from shoal.api.selector import selects
from shoal.registry.snapshot import MeshSnapshot, mtls_disabled


def _selects(selector: WorkloadSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    return selects(selector.match_labels, labels)


def applicable(mesh: MeshSnapshot, kind: str, workload: Resource) -> list[Resource]:
    """Policies of ``kind`` (AuthorizationPolicy, RequestAuthentication) that apply to
    ``workload``, in (namespace, name) order."""
    ns = workload.metadata.namespace
    labels = workload.spec.labels
    roots = mesh.config.policy_roots
    out = []
    for r in mesh.of_kind(kind):
        pns = r.metadata.namespace
        if (pns == ns or pns in roots) and _selects(r.spec.selector, labels):
            out.append(r)
    return out


def _peer_levels(mesh: MeshSnapshot, workload: Resource) -> list[PeerAuthenticationSpec]:
    """Workload-, namespace- and mesh-level PeerAuthentications, most specific first."""
    ns = workload.metadata.namespace
    labels = workload.spec.labels
    roots = mesh.config.policy_roots
    wl: list[Resource] = []
    nsl: list[Resource] = []
    meshl: list[Resource] = []
    for r in mesh.of_kind("PeerAuthentication"):
        spec: PeerAuthenticationSpec = r.spec
        pns = r.metadata.namespace
        if pns == ns and spec.selector is not None and spec.selector.match_labels:
            if _selects(spec.selector, labels):
                wl.append(r)
        elif pns == ns and pns not in roots and spec.selector is None:
            nsl.append(r)
        elif pns in roots and spec.selector is None:
            meshl.append(r)
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
