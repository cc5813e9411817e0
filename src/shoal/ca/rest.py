"""REST routes of the CA (mounted on the control plane's aiohttp app by ``RestApi``).

  POST /api/v1/tokens                 {namespace, serviceAccount, ttlSeconds} -> {token, ...}
  POST /api/v1/certificates           {csr, token?, workload?} + Bearer token -> SVID
  GET  /api/v1/certificates/{ns}/{workload}   what was issued to / reported by a workload
  GET  /api/v1/ca                     roots, active root, trust bundle
  GET  /api/v1/ca/bundle              {trustBundle, bundleVersion}
  POST /api/v1/ca/rotate-root, /api/v1/ca/prune-roots

Token minting and root rotation are operator actions: refused (403) on the TLS listener
that agents use, allowed on the loopback operator listener.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from shoal.ca.authority import CertificateAuthority
from shoal.ca.peer_cert import request_peer
from shoal.ca.tokens import TokenAuthority, TokenClaims
from shoal.control.audit import DETAILS, PRINCIPAL
from shoal.control.auth import principal_of
from shoal.control.errors import json_body
from shoal.control.rbac import ALL, Principal, Role, parse_grants
from shoal.errors import NotFound, PermissionDenied, Unauthenticated, ValidationError, Violation
from shoal.registry.admission import refuse_discovery_only

API = "/api/v1"
# Workload tokens only bootstrap a certificate (renewals use the certificate over mTLS),
# and remote-secret tokens are revocable and read discovery data only: 90 days at most.
MAX_TOKEN_TTL = 90 * 24 * 3600
DEFAULT_OPERATOR_TTL = 8 * 3600
MAX_OPERATOR_TTL = 30 * 24 * 3600
USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def bearer(request: web.Request, body: dict[str, Any] | None = None) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    token = (body or {}).get("token")
    return str(token) if token else None


class IdentityApi:
    def __init__(self, ca: CertificateAuthority, tokens: TokenAuthority, *,
                 require_tokens: bool = True):
        self.ca = ca
        self.tokens = tokens
        self.require_tokens = require_tokens
        self.reports: dict[str, dict[str, Any]] = {}  # "ns/workload" -> agent's report

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post(f"{API}/tokens", self.create_token)
        r.add_post(f"{API}/certificates", self.sign)
        r.add_get(f"{API}/certificates/{{namespace}}/{{workload}}", self.workload_certs)
        r.add_get(f"{API}/ca", self.status)
        r.add_get(f"{API}/ca/bundle", self.bundle)
        r.add_post(f"{API}/ca/rotate-root", self.rotate_root)
        r.add_post(f"{API}/ca/prune-roots", self.prune_roots)

    # -- used by the workload routes --------------------------------------------------
    def authenticate(self, request: web.Request) -> TokenClaims | None:
        """With tokens required: the request's token must be valid (for anyone)."""
        if not self.require_tokens:
            return None
        token = bearer(request)
        claims = self.tokens.verify(token) if token else self.certificate_claims(request)
        if claims is None:
            raise Unauthenticated("a token is required (Authorization: Bearer ...), or the "
                                  "workload's certificate over mTLS; create a token with "
                                  "`shoal token create`")
        request[PRINCIPAL] = Principal(claims.spiffe_id.uri, (), claims.jti)  # for the audit
        return claims

    def certificate_claims(self, request: web.Request) -> TokenClaims | None:
        """The identity of the workload certificate the caller presented over mTLS (the
        agents' listener asks for one; the TLS layer verified it against the mesh roots),
        as claims; None without one. The token it was first attested with must not be
        revoked: revoking a token ends the renewals of the certificates it obtained."""
        cert = request_peer(request)
        if cert is None:
            return None
        sid = cert.identity
        if sid is None:  # no identity to act for: unauthenticated here
            raise Unauthenticated(cert.problem)
        if sid.trust_domain != self.ca.trust_domain:
            raise Unauthenticated(f"the client certificate is for trust domain "
                                  f"{sid.trust_domain!r}, not this mesh's")
        jti = cert.attestation
        if not jti or self.tokens.revocations.revoked(jti):
            raise Unauthenticated(f"the client certificate's attestation (token {jti or '?'}) "
                                  "has been revoked; present a new token")
        return TokenClaims(sid, cert.not_before, cert.not_after, jti)

    def authorize(self, request: web.Request, namespace: str,
                  service_account: str | None = None) -> TokenClaims | None:
        """With tokens required: the request's token must be valid and for this
        namespace (and service account, when given)."""
        claims = self.authenticate(request)
        if claims is None:
            return None
        if claims.namespace != namespace or (
                service_account is not None and claims.service_account != service_account):
            want = f"namespace {namespace!r}" + (
                f", service account {service_account!r}" if service_account else "")
            raise PermissionDenied(f"the token is for {claims.spiffe_id} and cannot act for "
                                   f"{want}")
        return claims

    def record_report(self, namespace: str, workload: str, report: Any) -> None:
        if isinstance(report, dict):
            self.reports[f"{namespace}/{workload}"] = report

    # -- handlers -----------------------------------------------------------------------
    async def create_token(self, request: web.Request) -> web.Response:
        """A workload token ({namespace, serviceAccount}: admin of that namespace) or an
        operator token ({user, grants}: the mesh admin)."""
        principal = principal_of(request)
        body = await json_body(request)
        if "user" in body:
            return await self._create_operator_token(request, principal, body)
        ns, sa = body.get("namespace"), body.get("serviceAccount")
        problems = [Violation(f, "is required") for f, v in
                    (("namespace", ns), ("serviceAccount", sa)) if not isinstance(v, str) or not v]
        ttl = body.get("ttlSeconds", 24 * 3600)
        if not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_TOKEN_TTL:
            problems.append(Violation("ttlSeconds", f"must be 1..{MAX_TOKEN_TTL}"))
        if problems:
            raise ValidationError(problems)
        principal.require(Role.ADMIN, str(ns), f"create workload tokens for {ns}")
        token, claims = self.tokens.create(str(ns), str(sa), float(ttl))
        request[DETAILS] = {"action": "create-token", "subject": claims.spiffe_id.uri,
                            "createdTokenId": claims.jti, "expiresAt": claims.expires_at}
        return web.json_response({"token": token, "spiffeId": claims.spiffe_id.uri,
                                  "namespace": claims.namespace,
                                  "serviceAccount": claims.service_account,
                                  "expiresAt": claims.expires_at, "id": claims.jti})

    async def _create_operator_token(self, request: web.Request, principal: Principal,
                                     body: dict[str, Any]) -> web.Response:
        principal.require(Role.ADMIN, ALL, "create operator tokens")
        user, ttl = body.get("user"), body.get("ttlSeconds", DEFAULT_OPERATOR_TTL)
        problems = []
        if not isinstance(user, str) or not USER_NAME.match(user):
            problems.append(Violation("user", "must be a name of 1-64 letters, digits, "
                                              "'.', '_', '@' or '-'"))
        if not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_OPERATOR_TTL:
            problems.append(Violation("ttlSeconds", f"must be 1..{MAX_OPERATOR_TTL}"))
        try:
            grants = parse_grants(body.get("grants"))
        except ValidationError as e:
            problems += e.violations
        if problems:
            raise ValidationError(problems)
        token, claims = self.tokens.create_operator(
            str(user), tuple(str(g) for g in grants), float(ttl))
        request[DETAILS] = {"action": "create-token", "subject": f"user:{claims.user}",
                            "grants": list(claims.grants), "createdTokenId": claims.jti,
                            "expiresAt": claims.expires_at}
        return web.json_response({"token": token, "user": claims.user,
                                  "grants": list(claims.grants),
                                  "expiresAt": claims.expires_at, "id": claims.jti})

    async def sign(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        token = bearer(request, body)
        # a token, or (renewal) the current certificate over mTLS
        claims = self.tokens.verify(token) if token else self.certificate_claims(request)
        if claims is None:
            raise Unauthenticated("a token (or, to renew, the current workload certificate "
                                  "over mTLS) is required to obtain a certificate")
        # a remote secret's token reads discovery data only: no workload identity (ADR 0021)
        refuse_discovery_only(claims, "obtain certificates")
        csr = body.get("csr")
        if not isinstance(csr, str):
            raise ValidationError([Violation("csr", "is required (PEM)")])
        issued = self.ca.issue_workload(csr, claims, workload=str(body.get("workload") or ""))
        return web.json_response(issued.to_json())

    async def workload_certs(self, request: web.Request) -> web.Response:
        ns, wl = request.match_info["namespace"], request.match_info["workload"]
        issued = self.ca.issued.get(f"{ns}/{wl}")
        reported = self.reports.get(f"{ns}/{wl}")
        if issued is None and reported is None:
            raise_not_found(ns, wl)
        return web.json_response({
            "workload": wl, "namespace": ns, "issued": issued, "reported": reported,
            "roots": self.ca.status()["roots"],
            "bundleVersion": self.ca.bundle_version})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.ca.status())

    async def bundle(self, request: web.Request) -> web.Response:
        return web.json_response({"trustBundle": self.ca.bundle_pem(),
                                  "bundleVersion": self.ca.bundle_version})

    async def rotate_root(self, request: web.Request) -> web.Response:
        return web.json_response(self.ca.rotate_root())

    async def prune_roots(self, request: web.Request) -> web.Response:
        return web.json_response(self.ca.prune_roots())


def raise_not_found(ns: str, workload: str) -> None:
    raise NotFound(f"no certificate issued to or reported by workload {ns}/{workload}")
