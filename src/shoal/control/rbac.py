"""Who may do what on the operator API: roles granted per namespace and kind (ADR 0022).

A grant is ``ROLE:NAMESPACE[:KIND[,KIND...]]``; NAMESPACE ``*`` means every namespace
and the mesh-wide surfaces (proxies, telemetry, the CA, clusters, the audit log). With
kinds, the grant covers only config of those kinds (``edit:team-a:VirtualService``): it
gives nothing beyond config. Roles nest:

    view    read config, proxies' status and telemetry in the namespace
    edit    view + apply / delete config in the namespace, except security kinds
    admin   edit + security kinds (PeerAuthentication, AuthorizationPolicy,
            RequestAuthentication), workload tokens for the namespace;
            admin:* is the mesh admin: CA operations, operator tokens, revocations,
            clusters, the audit log

Config in the root namespace applies mesh-wide, so only grants naming the root
namespace (or ``*``) reach it — no special case is needed for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from shoal.api.kinds import resolve_kind
from shoal.errors import NotFound, PermissionDenied, ValidationError, Violation

ALL = "*"
SECURITY_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy",
                            "RequestAuthentication", "TokenRevocation",
                            "ReferenceGrant"})  # lets other namespaces' routes use ours
# EnvoyFilter patches the generated config below every policy: it could remove an
# authorization filter or add a cluster anywhere, so only mesh admins write it (ADR 0034)
MESH_ADMIN_KINDS = frozenset({"EnvoyFilter"})
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_GRANTS = 64


class Role(IntEnum):
    VIEW = 1
    EDIT = 2
    ADMIN = 3

    @staticmethod
    def parse(text: str) -> Role:
        try:
            return Role[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (view, edit or admin)") from None


@dataclass(frozen=True)
class Grant:
    role: Role
    namespace: str  # a namespace or ALL
    kinds: frozenset[str] | None = None  # None: every kind and the non-config surfaces

    @staticmethod
    def parse(text: str) -> Grant:
        """``ROLE:NAMESPACE[:KINDS]`` (``admin:*``, ``edit:default:VirtualService,dr``)."""
        role, sep, rest = text.partition(":")
        namespace, _, kinds = rest.partition(":")
        if not sep:
            raise ValueError(f"{text!r} is not ROLE:NAMESPACE[:KIND,...] (e.g. edit:default, "
                             "view:*, edit:default:VirtualService)")
        if namespace != ALL and not _NAMESPACE.match(namespace):
            raise ValueError(f"{namespace!r} is neither a namespace nor '*'")
        names = None
        if kinds:
            try:
                names = frozenset(resolve_kind(k.strip()).name for k in kinds.split(","))
            except NotFound as e:
                raise ValueError(str(e)) from None
        return Grant(Role.parse(role), namespace, names)

    def covers(self, namespace: str, kind: str | None) -> bool:
        """Does this grant speak for NAMESPACE (ALL: mesh-wide) and KIND (None: not config)?"""
        if self.kinds is not None and (kind is None or kind not in self.kinds):
            return False
        return self.namespace == ALL or (namespace != ALL and self.namespace == namespace)

    def __str__(self) -> str:
        kinds = f":{','.join(sorted(self.kinds))}" if self.kinds else ""
        return f"{self.role.name.lower()}:{self.namespace}{kinds}"


def parse_grants(texts: object, field: str = "grants") -> tuple[Grant, ...]:
    """Grants from a request body; every problem a :class:`ValidationError`."""
    if not isinstance(texts, list) or not texts or len(texts) > MAX_GRANTS:
        raise ValidationError([Violation(field, f"must be a list of 1..{MAX_GRANTS} "
                                                "ROLE:NAMESPACE[:KIND,...] strings")])
    grants, problems = [], []
    for i, text in enumerate(texts):
        try:
            grants.append(Grant.parse(text if isinstance(text, str) else repr(text)))
        except ValueError as e:
            problems.append(Violation(f"{field}[{i}]", str(e)))
    if problems:
        raise ValidationError(problems)
    return tuple(dict.fromkeys(grants))


@dataclass(frozen=True)
class Principal:
    """The caller of one request, as its credential says."""

    name: str  # "user:alice", or a workload's SPIFFE ID
    grants: tuple[Grant, ...] = ()
    token_id: str = ""

    def role_in(self, namespace: str, kind: str | None = None) -> Role | None:
        """The highest role this principal has in NAMESPACE (ALL: mesh-wide only) for
        config of KIND (None: a surface that is not config)."""
        roles = [g.role for g in self.grants if g.covers(namespace, kind)]
        return max(roles) if roles else None

    def sees(self, namespace: str) -> bool:
        """Has any grant in NAMESPACE (for some kind at least)?"""
        return any(g.namespace in (ALL, namespace) for g in self.grants)

    def can(self, role: Role, namespace: str, kind: str | None = None) -> bool:
        have = self.role_in(namespace, kind)
        return have is not None and have >= role

    def require(self, role: Role, namespace: str, what: str, kind: str | None = None
                ) -> None:
        if not self.can(role, namespace, kind):
            where = "mesh-wide (namespace '*')" if namespace == ALL else \
                f"in namespace {namespace!r}"
            of = f" for {kind}" if kind else ""
            raise PermissionDenied(f"{self.name} may not {what}: it needs the "
                                   f"{role.name.lower()} role {where}{of}")

    def require_write(self, kind: str, namespace: str, verb: str = "change") -> None:
        if kind in MESH_ADMIN_KINDS:  # it can remove any filter, add any cluster
            self.require(Role.ADMIN, ALL, f"{verb} {kind} in {namespace}", kind)
            return
        role = Role.ADMIN if kind in SECURITY_KINDS else Role.EDIT
        self.require(role, namespace, f"{verb} {kind} in {namespace}", kind)
