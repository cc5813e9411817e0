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

from typing import Any

from aiohttp import web

from shoal.ca.authority import CertificateAuthority
from shoal.ca.tokens import TokenAuthority, TokenClaims
from shoal.control.errors import json_body
from shoal.errors import NotFound, PermissionDenied, Unauthenticated, ValidationError, Violation

API = "/api/v1"
MAX_TOKEN_TTL = 366 * 24 * 3600


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
        if not token:
            raise Unauthenticated("a token is required (Authorization: Bearer ...); create "
                                  "one with `shoal token create`")
        return self.tokens.verify(token)

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
        body = await json_body(request)
        ns, sa = body.get("namespace"), body.get("serviceAccount")
        problems = [Violation(f, "is required") for f, v in
                    (("namespace", ns), ("serviceAccount", sa)) if not isinstance(v, str) or not v]
        ttl = body.get("ttlSeconds", 24 * 3600)
        if not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_TOKEN_TTL:
            problems.append(Violation("ttlSeconds", f"must be 1..{MAX_TOKEN_TTL}"))
        if problems:
            raise ValidationError(problems)
        token, claims = self.tokens.create(str(ns), str(sa), float(ttl))
        return web.json_response({"token": token, "spiffeId": claims.spiffe_id.uri,
                                  "namespace": claims.namespace,
                                  "serviceAccount": claims.service_account,
                                  "expiresAt": claims.expires_at, "id": claims.jti})

    async def sign(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        token = bearer(request, body)
        if not token:
            raise Unauthenticated("a token is required to obtain a certificate")
        claims = self.tokens.verify(token)
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
