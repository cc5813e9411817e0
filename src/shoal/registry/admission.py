"""Who may register, renew and remove which workload: registration bound to the identity
of the caller's token (docs/adr/0021-registration-bound-to-identity.md).

With tokens required, the REST routes check first that the token is for the workload's
namespace (and, on registration, its service account), then ask this module:

* :func:`refuse_discovery_only`: the remote-secret identity ``<root ns>/cluster-reader``
  reads the discovery routes and nothing else (no certificate, no registration).
* :func:`admit_registration`: a workload name is held by one service account (an
  expired lease frees it); fields that change how *others* treat the workload cannot be
  self-granted (``security.shoal.io/tlsMode: disabled``, the multi-cluster annotations
  only the control plane's view sets); a token cannot join a Service or Gateway whose
  workloads all run as other identities, unless the operator lists it in the
  resource's ``security.shoal.io/service-accounts`` annotation; only gateways register
  in the root namespace. Returns the revision the decision read, for the store write.
* :func:`owned_workload`: heartbeat and deregistration act on a workload of the token's
  own service account only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shoal.api.gateway import GATEWAY_ANNOTATION
from shoal.api.meta import Resource, ResourceKey
from shoal.api.selector import selects
from shoal.ca.spiffe import SpiffeId
from shoal.ca.tokens import TokenClaims
from shoal.errors import NotFound, PermissionDenied
from shoal.multicluster.labels import EAST_WEST_ANNOTATION, REMOTE_ANNOTATION
from shoal.multicluster.secrets import READER_SERVICE_ACCOUNT
from shoal.registry.snapshot import TLS_MODE_LABEL, MeshConfig, mtls_disabled
from shoal.store.base import Store

#: The mesh root namespace (not configurable yet: MeshConfig's default).
ROOT_NAMESPACE = MeshConfig().root_namespace
#: On a Service or Gateway (set by an operator): the service accounts whose workloads may
#: join it, comma-separated; ``sa`` is in the resource's namespace, ``ns/sa`` in another.
SERVICE_ACCOUNTS_ANNOTATION = "security.shoal.io/service-accounts"
#: Set by the control plane's multi-cluster view only, never by a registration.
VIEW_ONLY_ANNOTATIONS = (REMOTE_ANNOTATION, EAST_WEST_ANNOTATION)

Identity = tuple[str, str]  # (namespace, service account)


def is_discovery_only(claims: TokenClaims, root_namespace: str = ROOT_NAMESPACE) -> bool:
    """Is this the remote-secret identity (``<root ns>/cluster-reader``)?"""
    return (claims.namespace, claims.service_account) == (root_namespace,
                                                          READER_SERVICE_ACCOUNT)


def refuse_discovery_only(claims: TokenClaims, action: str,
                          root_namespace: str = ROOT_NAMESPACE) -> None:
    if is_discovery_only(claims, root_namespace):
        raise PermissionDenied(
            f"the token is for {claims.spiffe_id}, the remote-secret identity: it reads "
            f"the discovery routes and nothing else, so it cannot {action}")


def _uri(claims: TokenClaims, who: Identity) -> str:
    return SpiffeId(claims.spiffe_id.trust_domain, *who).uri


def _identity(workload: Resource) -> Identity:
    return workload.metadata.namespace, str(workload.spec.service_account)


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and selects(selector, labels)


def allowed_identities(resource: Resource) -> set[Identity] | None:
    """The identities an operator allows to join ``resource``; None when it does not say."""
    text = resource.metadata.annotations.get(SERVICE_ACCOUNTS_ANNOTATION)
    if text is None:
        return None
    out: set[Identity] = set()
    for item in filter(None, (p.strip() for p in text.split(","))):
        ns, _, sa = item.rpartition("/")
        out.add((ns or resource.metadata.namespace, sa))
    return out


async def _stored(store: Store, key: ResourceKey) -> Resource | None:
    try:
        return await store.get(key)
    except NotFound:
        return None


async def owned_workload(store: Store, claims: TokenClaims, namespace: str,
                         name: str) -> Resource:
    """The stored workload, if it runs as the token's identity; NotFound when there is
    none, PermissionDenied when another service account runs it."""
    refuse_discovery_only(claims, "renew or remove workloads")
    stored = await store.get(ResourceKey("Workload", namespace, name))
    if _identity(stored) != (claims.namespace, claims.service_account):
        raise PermissionDenied(
            f"workload {namespace}/{name} runs as {_uri(claims, _identity(stored))}; a token "
            f"for {claims.spiffe_id} cannot renew or remove it")
    return stored


def self_granted(workload: Resource, existing: Resource | None) -> list[str]:
    """Fields of ``workload`` that change how others treat it and that a registration
    cannot grant itself."""
    out = []
    if mtls_disabled(workload) and not (existing is not None and mtls_disabled(existing)):
        out.append(f"label {TLS_MODE_LABEL}: disabled would make clients send it "
                   "plaintext; a workload with a token has an identity and speaks mTLS "
                   "(only an operator can apply a plaintext Workload)")
    out += [f"annotation {a} is set by the control plane's multi-cluster view only"
            for a in VIEW_ONLY_ANNOTATIONS if a in workload.metadata.annotations]
    return out


def _service_document(workload: Resource, service: Resource | None) -> list[str]:
    if service is None:
        return []
    out = []
    if service.metadata.namespace != workload.metadata.namespace:
        out.append(f"service {service.metadata.namespace}/{service.metadata.name} is not in "
                   f"the workload's namespace {workload.metadata.namespace!r}")
    if SERVICE_ACCOUNTS_ANNOTATION in service.metadata.annotations:
        out.append(f"annotation {SERVICE_ACCOUNTS_ANNOTATION} on a Service is the "
                   "operator's to set")
    return out


def _may_join(claims: TokenClaims, what: str, resource: Resource,
              peers: Iterable[Resource], me: Identity) -> list[str]:
    allowed = allowed_identities(resource)
    if allowed is not None:
        if me in allowed:
            return []
        names = ", ".join(sorted(f"{ns}/{sa}" for ns, sa in allowed)) or "none"
        return [f"{what} admits the service accounts {names} only "
                f"({SERVICE_ACCOUNTS_ANNOTATION})"]
    running = {_identity(w) for w in peers}
    if not running or me in running:
        return []
    return [f"{what} is served by {', '.join(sorted(_uri(claims, r) for r in running))} "
            f"only; {_uri(claims, me)} cannot join it (an operator allows it with the "
            f"annotation {SERVICE_ACCOUNTS_ANNOTATION})"]


async def _joins(store: Store, claims: TokenClaims, workload: Resource,
                 service: Resource | None) -> list[str]:
    """Services (of its namespace) and Gateways (of any) that select ``workload`` and
    that it may not join."""
    ns, labels, me = workload.metadata.namespace, workload.spec.labels, _identity(workload)
    services, _ = await store.list("Service", ns)
    if service is not None and service.metadata.namespace == ns \
            and all(s.key != service.key for s in services):
        services.append(service)  # created by this registration
    workloads, _ = await store.list("Workload")
    others = [w for w in workloads if w.key != workload.key]
    out = []
    for svc in services:
        if _selects(svc.spec.selector, labels):
            peers = [w for w in others if w.metadata.namespace == ns
                     and _selects(svc.spec.selector, w.spec.labels)]
            out += _may_join(claims, f"service {ns}/{svc.metadata.name}", svc, peers, me)
    if GATEWAY_ANNOTATION in workload.metadata.annotations:
        gateways, _ = await store.list("Gateway")
        for gw in gateways:
            if _selects(gw.spec.selector, labels):
                peers = [w for w in others if GATEWAY_ANNOTATION in w.metadata.annotations
                         and _selects(gw.spec.selector, w.spec.labels)]
                out += _may_join(claims, f"Gateway {gw.metadata.namespace}/"
                                 f"{gw.metadata.name}", gw, peers, me)
    return out


async def admit_registration(store: Store, claims: TokenClaims, workload: Resource,
                             service: Resource | None, *,
                             root_namespace: str = ROOT_NAMESPACE) -> dict[ResourceKey, int]:
    """Check a registration by the holder of ``claims`` (already known to be for the
    workload's namespace and service account). Returns ``{workload key: the revision it
    was read at, 0 if absent}`` for the store write, so that a registration racing this
    one cannot slip in between; PermissionDenied with every reason otherwise."""
    refuse_discovery_only(claims, "register workloads", root_namespace)
    ns, name = workload.metadata.namespace, workload.metadata.name
    existing = await _stored(store, workload.key)
    if existing is not None and _identity(existing) != _identity(workload):
        raise PermissionDenied(
            f"workload {ns}/{name} is registered as {_uri(claims, _identity(existing))}; a "
            f"token for {claims.spiffe_id} cannot take it over (the name is free once it "
            "is deregistered or its lease expires)")
    reasons = self_granted(workload, existing) + _service_document(workload, service)
    if ns == root_namespace and GATEWAY_ANNOTATION not in workload.metadata.annotations:
        reasons.append(f"only gateways register in the root namespace {root_namespace!r}")
    reasons += await _joins(store, claims, workload, service)
    if reasons:
        raise PermissionDenied(f"registration of workload {ns}/{name} by "
                               f"{claims.spiffe_id} refused: " + "; ".join(reasons))
    return {workload.key: existing.revision if existing is not None else 0}
