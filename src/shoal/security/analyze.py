"""``shoal analyze``'s checks of the security policies: each asks the slice's own
resolution (:mod:`.scoping` for which workloads a policy applies to, :mod:`.ext_authz`
for a CUSTOM policy's provider), the same code the Envoy plugin runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from shoal.registry.snapshot import MeshSnapshot
from shoal.security import ext_authz
from shoal.security.scoping import applies_to, has_selector, root_selector_ignored

if TYPE_CHECKING:  # (imported when run: shoal.analyze imports this module)
    from shoal.analyze.finding import Finding


def policy_selectors(mesh: MeshSnapshot) -> Iterator[Finding]:
    """Security policies whose selector matches no workload (a sidecar's or a gateway's):
    usually a typo in a label, and then nothing is protected. Which workloads a policy
    applies to is the generators' own rule (``scoping.applies_to``)."""
    from shoal.analyze.finding import Finding

    roots = mesh.config.policy_roots
    for kind in ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication"):
        for policy in mesh.of_kind(kind):
            if not has_selector(policy):
                continue
            if root_selector_ignored(mesh, policy):
                yield Finding("selector-ignored", str(policy.key), "spec.selector",
                              f"a PeerAuthentication with a selector in the root namespace "
                              f"{policy.metadata.namespace} is ignored (as in Istio): put it "
                              "in the workloads' namespace, or drop the selector to make it "
                              "mesh-wide")
                continue
            if not any(applies_to(mesh, policy, w) for w in mesh.workloads):
                ns = policy.metadata.namespace
                where = "any namespace" if ns in roots else f"namespace {ns}"
                yield Finding("selects-nothing", str(policy.key), "spec.selector.matchLabels",
                              f"no workload (sidecar or gateway) in {where} has labels "
                              f"{dict(policy.spec.selector.match_labels)}: the policy "
                              "applies to nothing")


def custom_providers(mesh: MeshSnapshot) -> Iterator[Finding]:
    """CUSTOM policies whose provider cannot be used (the generator's own resolution):
    the requests they select are denied."""
    from shoal.analyze.finding import Finding

    for policy in ext_authz.custom(mesh.of_kind("AuthorizationPolicy")):
        res = ext_authz.resolve_provider(mesh, policy.spec.provider.name)
        if res.provider is None:
            yield Finding("provider-unavailable", str(policy.key), "spec.provider.name",
                          f"{res.error}: the requests this policy selects are denied "
                          "(fail closed)")
