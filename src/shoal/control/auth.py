"""Authentication and authorization of the operator API (docs/adr/0022).

Every request on the operator listener passes three checks before its handler runs:

Public routes (health, static files, the trust bundle) skip them all.

1. **Where it comes from.** The ``Host`` header must name this API (loopback names, the
   address it listens on, or ``--api-host`` aliases): a DNS-rebinding page cannot talk
   to it. An ``Origin`` header must be this API's own origin: no other web page can.
2. **What it sends.** A request that changes something and has a body must declare it
   as JSON or YAML; a form or ``text/plain`` body (what a cross-site form can send) is
   refused with 415.
3. **Who it is.** An operator token (``Authorization: Bearer``) with a role that allows
   the route (:data:`RULES`); routes not listed need the mesh admin (fail closed).
   Handlers whose permission depends on the body (apply, tokens) check it themselves
   with the :class:`~shoal.control.rbac.Principal` left on the request.

The agents' TLS listener is guarded by :mod:`shoal.control.agent_listener` instead; the
routes agents use there authenticate workload tokens themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from shoal.ca.tokens import TokenAuthority
from shoal.control.audit import AUDIT_PATH, PRINCIPAL
from shoal.control.rbac import ALL, Grant, Principal, Role
from shoal.errors import PermissionDenied, Unauthenticated
from shoal.multicluster.federation import EDGES_PATH, TRACES_PATH
from shoal.multicluster.remote import DISCOVERY_PATH
from shoal.netaddr import is_ip
from shoal.ratelimit.embedded import REST_PREFIX
from shoal.telemetry.report import STATS_PATH
from shoal.telemetry.scrape import TARGETS_PATH
from shoal.telemetry.zipkin import SPANS_PATH

API = "/api/v1"
BODY_TYPES = frozenset({"application/json", "application/yaml", "application/x-yaml",
                        "text/yaml", "text/x-yaml"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class Public:
    """No credential needed (health, static UI files, the public trust bundle)."""


class OwnCredential:
    """The handler authenticates a workload or remote-cluster token itself."""


class AnyOperator:
    """Any valid operator token; the handler authorizes what the body asks for."""


@dataclass(frozen=True)
class Needs:
    """A role in the namespace named by the route's ``{param}`` (None: mesh-wide)."""

    role: Role
    param: str | None = None


Rule = Public | OwnCredential | AnyOperator | Needs
PUBLIC, OWN, OPERATOR = Public(), OwnCredential(), AnyOperator()
MESH_VIEW, MESH_ADMIN = Needs(Role.VIEW), Needs(Role.ADMIN)

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/"): PUBLIC,
    ("GET", "/ui/static"): PUBLIC,
    ("GET", f"{API}/ca/bundle"): PUBLIC,
    # Sidecars POST Zipkin spans on the agents' listener with their certificate (ADR
    # 0025); here, posting spans is the mesh admin's (e.g. replaying a capture).
    ("POST", SPANS_PATH): MESH_ADMIN,
    ("POST", f"{API}/workloads"): OWN,
    ("POST", STATS_PATH): OWN,  # a proxy's counters: its workload's token or certificate
    ("PUT", f"{API}/workloads/{{namespace}}/{{name}}/heartbeat"): OWN,
    ("DELETE", f"{API}/workloads/{{namespace}}/{{name}}"): OWN,
    ("POST", f"{API}/certificates"): OWN,
    ("GET", DISCOVERY_PATH): OWN,
    ("GET", EDGES_PATH): OWN,
    ("GET", TRACES_PATH): OWN,
    ("GET", f"{TRACES_PATH}/{{trace_id}}"): OWN,
    ("POST", f"{API}/apply"): OPERATOR,
    ("GET", f"{API}/resources"): OPERATOR,
    ("GET", f"{API}/watch"): OPERATOR,
    ("DELETE", f"{API}/resources/{{kind}}/{{namespace}}/{{name}}"): OPERATOR,
    ("POST", f"{API}/tokens"): OPERATOR,
    ("GET", f"{API}/whoami"): OPERATOR,
    ("GET", f"{API}/meshconfig"): OPERATOR,  # `shoal analyze` checks against it
    ("GET", f"{API}/resources/{{kind}}/{{namespace}}/{{name}}"): OPERATOR,
    ("GET", f"{API}/certificates/{{namespace}}/{{workload}}"): Needs(Role.VIEW, "namespace"),
    ("GET", f"{API}/proxies"): MESH_VIEW,
    ("GET", f"{API}/proxies/{{node}}/config"): MESH_VIEW,
    ("GET", "/metrics"): MESH_VIEW,
    ("GET", TARGETS_PATH): MESH_VIEW,  # Prometheus' http_sd of the workloads' metrics
    ("GET", f"{API}/metrics/edges"): MESH_VIEW,
    ("GET", f"{API}/metrics/series"): MESH_VIEW,
    ("GET", f"{API}/logs"): MESH_VIEW,
    ("GET", f"{API}/traces"): MESH_VIEW,
    ("GET", f"{API}/traces/{{trace_id}}"): MESH_VIEW,
    ("GET", f"{API}/topology"): MESH_VIEW,
    ("GET", f"{API}/slos"): MESH_VIEW,
    ("GET", f"{API}/ca"): MESH_VIEW,
    ("GET", f"{API}/clusters"): MESH_VIEW,
    ("GET", f"{REST_PREFIX}/quotas"): MESH_VIEW,
    ("GET", f"{REST_PREFIX}/stats"): MESH_VIEW,
    ("GET", AUDIT_PATH): MESH_ADMIN,
    ("POST", f"{API}/tokens/revoke"): MESH_ADMIN,
    ("POST", f"{API}/ca/rotate-root"): MESH_ADMIN,
    ("POST", f"{API}/ca/prune-roots"): MESH_ADMIN,
    ("POST", f"{API}/clusters"): MESH_ADMIN,
    ("DELETE", f"{API}/clusters/{{name}}"): MESH_ADMIN,
}


def rule_for(method: str, pattern: str) -> Rule:
    """The rule of METHOD PATTERN; unlisted routes need the mesh admin (fail closed)."""
    return RULES.get(("GET" if method == "HEAD" else method, pattern), MESH_ADMIN)


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


def _host_only(host: str) -> str:
    """'127.0.0.1:15080' -> '127.0.0.1', '[::1]:80' -> '::1', 'Name' -> 'name'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host



class OperatorAuth:
    """The operator listener's checks, as an aiohttp middleware (see module doc)."""

    def __init__(self, tokens: TokenAuthority, *, bind_host: str,
                 aliases: Iterable[str] = ()):
        self._tokens = tokens
        self._wildcard = bind_host in ("", "0.0.0.0", "::")
        self._hosts = frozenset({*LOOPBACK_NAMES, *(a.lower() for a in aliases),
                                 *(() if self._wildcard else (bind_host.lower(),))})

    def host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True  # not a browser: rebinding needs one, and browsers always send it
        name = _host_only(host)
        return name in self._hosts or (self._wildcard and is_ip(name))

    def principal(self, request: web.Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise Unauthenticated(
                "the operator API needs a credential (Authorization: Bearer TOKEN); the "
                "CLI reads $SHOAL_API_TOKEN or <data-dir>/admin.token, see "
                "docs/security.md#operator-access")
        claims = self._tokens.verify_operator(token)
        grants = []
        for text in claims.grants:
            try:
                grants.append(Grant.parse(text))
            except ValueError:
                continue  # a grant this version does not know gives nothing
        return Principal(f"user:{claims.user}", tuple(grants), claims.jti)

    def check_origin(self, request: web.Request) -> None:
        if not self.host_allowed(request.headers.get("Host")):
            raise PermissionDenied(
                f"Host {request.headers.get('Host')!r} is not this API's (DNS rebinding?); "
                "add it with `shoal control-plane --api-host NAME`")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != \
                f"{request.scheme}://{request.headers.get('Host', '')}".lower():
            raise PermissionDenied(f"cross-origin request from {origin!r} refused")

    @staticmethod
    def check_body_type(request: web.Request) -> None:
        if request.method in _READS or not request.body_exists:
            return
        if request.content_type not in BODY_TYPES:
            raise web.HTTPUnsupportedMediaType(
                text=f'{{"error": "a {request.method} body must be JSON or YAML '
                     f'(Content-Type application/json or application/yaml), not '
                     f'{request.content_type!r}"}}', content_type="application/json")

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def operator_auth(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if request.secure:  # the agents' listener: agent_listener_guard's job
                return await handler(request)
            if request.match_info.http_exception is not None:
                rule: Rule = MESH_ADMIN  # 404 / 405 after the checks, as usual
            else:
                resource = request.match_info.route.resource
                rule = rule_for(request.method, resource.canonical if resource else "")
            if isinstance(rule, Public):  # no credential involved: nothing to protect
                return await handler(request)
            self.check_origin(request)
            self.check_body_type(request)
            if request.match_info.http_exception is not None or isinstance(rule,
                                                                            OwnCredential):
                return await handler(request)
            principal = self.principal(request)
            request[PRINCIPAL] = principal
            if isinstance(rule, Needs):
                namespace = request.match_info[rule.param] if rule.param else ALL
                principal.require(rule.role, namespace,
                                  f"{request.method} {request.path}")
            return await handler(request)
        return operator_auth


def principal_of(request: web.Request) -> Principal:
    """The operator who made REQUEST (set by the middleware on AnyOperator routes)."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise Unauthenticated("this route needs an operator credential")
    return principal
