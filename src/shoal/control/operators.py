"""Operator credentials: the bootstrap admin token file, revocation, whoami, the audit log.

  POST /api/v1/tokens/revoke   {id | token, reason?}   (mesh admin) -> TokenRevocation
  GET  /api/v1/whoami          the caller's principal and grants
  GET  /api/v1/audit           [?limit=&user=&since=]  (mesh admin)

(Minting tokens of both kinds is ``POST /api/v1/tokens``, :mod:`shoal.ca.rest`.)

The control plane keeps a mesh-admin token for the user who runs it in
``<data-dir>/admin.token`` (0600, like a kubeconfig): written at start when missing,
expired, revoked or past half its lifetime, and renewed while running. The CLI and
``shoal up`` read it, so whoever can read the control plane's data directory is its
admin — and nobody else.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from shoal.api import parse_document
from shoal.ca.tokens import TokenAuthority
from shoal.control.audit import AUDIT_PATH, DETAILS, AuditLog
from shoal.control.auth import principal_of
from shoal.control.errors import json_body
from shoal.control.rbac import ALL, Role
from shoal.control.revocations import KIND
from shoal.errors import ShoalError, Unauthenticated, ValidationError, Violation
from shoal.store.base import Store

API = "/api/v1"
ADMIN_USER = "admin"
log = logging.getLogger(__name__)


def write_private_text(path: Path, text: str) -> None:
    """Write TEXT to PATH atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


class AdminCredential:
    """The bootstrap mesh-admin token in a 0600 file, kept valid while the CP runs."""

    def __init__(self, tokens: TokenAuthority, path: Path, ttl: float):
        self._tokens = tokens
        self.path = path
        self._ttl = ttl

    def _remaining(self) -> float:
        """Seconds the token in the file stays valid (0: missing or not valid)."""
        try:
            claims = self._tokens.verify_operator(self.path.read_text().strip())
        except (OSError, ShoalError):
            return 0.0
        if "admin:*" not in claims.grants:
            return 0.0
        return claims.expires_at - self._tokens.now()

    def ensure(self) -> None:
        if self._remaining() > self._ttl / 2:
            return
        token, claims = self._tokens.create_operator(ADMIN_USER, ("admin:*",), self._ttl)
        write_private_text(self.path, token + "\n")
        log.info("operator credential written", extra={
            "path": str(self.path), "token_id": claims.jti, "expires_at": claims.expires_at})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, min(self._ttl / 8, 600.0)))
            self.ensure()


class OperatorApi:
    def __init__(self, tokens: TokenAuthority, store: Store, audit: AuditLog,
                 root_namespace: str):
        self._tokens = tokens
        self._store = store
        self._audit = audit
        self._root = root_namespace

    def mount(self, app: web.Application) -> None:
        app.router.add_post(f"{API}/tokens/revoke", self.revoke)
        app.router.add_get(f"{API}/whoami", self.whoami)
        app.router.add_get(AUDIT_PATH, self._audit.handle_list)

    async def whoami(self, request: web.Request) -> web.Response:
        p = principal_of(request)
        return web.json_response({"user": p.name, "tokenId": p.token_id,
                                  "grants": [str(g) for g in p.grants]})

    async def revoke(self, request: web.Request) -> web.Response:
        principal_of(request).require(Role.ADMIN, ALL, "revoke tokens")
        body = await json_body(request)
        jti, subject, expires = body.get("id"), "", 0
        if isinstance(body.get("token"), str):
            jti, subject, expires = self._identify(body["token"])
        reason = body.get("reason", "")
        if not isinstance(jti, str) or not jti.isalnum() or len(jti) > 64:
            raise ValidationError([Violation("id", "the token's id (jti) or the token "
                                                   "itself is required")])
        if not isinstance(reason, str) or len(reason) > 1024:
            raise ValidationError([Violation("reason", "must be text (≤ 1024 chars)")])
        doc = parse_document({
            "apiVersion": "mesh.shoal.io/v1alpha1", "kind": KIND,
            "metadata": {"name": jti.lower(), "namespace": self._root},
            "spec": {"subject": subject, "expiresAt": expires, "reason": reason}}, 0, "")
        result = await self._store.apply([doc])
        request[DETAILS] = {"action": "revoke-token", "revokedTokenId": jti.lower(),
                            "revision": result.revision}
        return web.json_response({"revoked": jti.lower(), "subject": subject,
                                  "revision": result.revision})

    def _identify(self, token: str) -> tuple[str, str, int]:
        """Id, subject and expiry of a token this control plane signed (even if expired
        or already revoked)."""
        try:
            body = self._tokens.signed_body(token)
        except Unauthenticated as e:
            raise ValidationError([Violation("token", str(e))]) from None
        exp = body.get("exp")
        return str(body.get("jti", "")), str(body.get("sub", "")), \
            exp if type(exp) is int and exp > 0 else 0
