"""Tokens: compact JWS (ES256) minted by the control plane, of two kinds.

* **Workload (attestation) tokens** say "whoever holds this may obtain certificates for
  spiffe://TD/ns/NS/sa/SA and register workloads of NS running as SA until exp".
  Claims: iss ``shoal``, aud ``shoal-ca``, sub (the SPIFFE ID), ns, sa, iat, exp, jti.
* **Operator tokens** are the credential of a person or tool on the operator API.
  Claims: iss ``shoal``, aud ``shoal-api``, sub ``user:NAME``, grants (``ROLE:NAMESPACE``
  strings, see :mod:`shoal.control.rbac`), iat, exp, jti.

The audiences keep the two apart: neither kind is accepted where the other is expected.
Every token has an id (jti) that can be revoked (:class:`Revocations`), checked on use.
Implemented with ``cryptography`` only (no JWT library): the format is small and fixed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from shoal.ca.spiffe import SpiffeId
from shoal.errors import Unauthenticated, ValidationError, Violation

ISSUER = "shoal"
AUDIENCE = "shoal-ca"  # workload tokens
OPERATOR_AUDIENCE = "shoal-api"  # operator tokens
LEEWAY = 30  # seconds of clock skew tolerated on iat


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    spiffe_id: SpiffeId
    issued_at: int
    expires_at: int
    jti: str

    @property
    def namespace(self) -> str:
        return self.spiffe_id.namespace

    @property
    def service_account(self) -> str:
        return self.spiffe_id.service_account


@dataclass(frozen=True)
class OperatorClaims:
    """Who an operator token speaks for and what it was granted (``ROLE:NAMESPACE``)."""

    user: str
    grants: tuple[str, ...]
    issued_at: int
    expires_at: int
    jti: str


class Revocations(Protocol):
    def revoked(self, jti: str) -> bool: ...


class _NoRevocations:
    def revoked(self, jti: str) -> bool:
        return False


MAX_TOKEN_BYTES = 8192  # far above any token shoal mints; bounds the work on bad input


class TokenAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, trust_domain: str, *,
                 clock: Callable[[], float] = time.time,
                 revocations: Revocations | None = None):
        self._key = key
        self._pub = key.public_key()
        self._td = trust_domain
        self._clock = clock
        self.revocations: Revocations = revocations or _NoRevocations()
        der = self._pub.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = hashlib.sha256(der).hexdigest()[:16]

    def create(self, namespace: str, service_account: str, ttl_seconds: float) -> tuple[
            str, TokenClaims]:
        """A workload token for NAMESPACE/SERVICE_ACCOUNT."""
        iat, exp = self._lifetime(ttl_seconds)
        sid = SpiffeId.parse(SpiffeId(self._td, namespace, service_account).uri)
        claims = TokenClaims(sid, iat, exp, uuid.uuid4().hex)
        return self._sign({"iss": ISSUER, "aud": AUDIENCE, "sub": sid.uri, "ns": namespace,
                           "sa": service_account, "iat": iat, "exp": exp,
                           "jti": claims.jti}), claims

    def create_operator(self, user: str, grants: tuple[str, ...], ttl_seconds: float
                        ) -> tuple[str, OperatorClaims]:
        """An operator token for USER with GRANTS (checked by the caller)."""
        iat, exp = self._lifetime(ttl_seconds)
        claims = OperatorClaims(user, tuple(grants), iat, exp, uuid.uuid4().hex)
        return self._sign({"iss": ISSUER, "aud": OPERATOR_AUDIENCE, "sub": f"user:{user}",
                           "grants": list(grants), "iat": iat, "exp": exp,
                           "jti": claims.jti}), claims

    def verify_operator(self, token: str) -> OperatorClaims:
        """An operator token's claims; :class:`Unauthenticated` saying why it is not valid
        (a workload token is not an operator credential)."""
        body, iat, exp = self._verified(token, OPERATOR_AUDIENCE)
        sub, grants = body.get("sub"), body.get("grants")
        if not isinstance(sub, str) or not sub.startswith("user:") or not isinstance(
                grants, list) or not all(isinstance(g, str) for g in grants):
            raise Unauthenticated("operator token claims are incomplete (sub, grants)")
        return OperatorClaims(sub[5:], tuple(grants), iat, exp, str(body.get("jti", "")))

    def _lifetime(self, ttl_seconds: float) -> tuple[int, int]:
        if ttl_seconds < 1:
            raise ValidationError([Violation("ttlSeconds", "must be at least 1 second")])
        iat = int(self._clock())
        return iat, iat + int(ttl_seconds)

    def _sign(self, body: dict[str, Any]) -> str:
        header = {"alg": "ES256", "typ": "JWT", "kid": self.key_id}
        signing_input = f"{_b64(_json(header))}.{_b64(_json(body))}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(sig)}"

    def verify(self, token: str) -> TokenClaims:
        """A workload token's claims; :class:`Unauthenticated` saying why when it is not
        valid (an operator token is not a workload credential)."""
        body, iat, exp = self._verified(token, AUDIENCE)
        try:
            sid = SpiffeId.parse(str(body["sub"]))
        except (KeyError, TypeError, ValueError, ValidationError):
            raise Unauthenticated("token claims are incomplete (sub, iat, exp)") from None
        if sid.trust_domain != self._td or body.get("ns") != sid.namespace \
                or body.get("sa") != sid.service_account:
            raise Unauthenticated("token claims are inconsistent with its subject")
        return TokenClaims(sid, iat, exp, str(body.get("jti", "")))

    def now(self) -> float:
        return self._clock()

    def signed_body(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by this authority, whatever its audience, expiry
        or revocation (to name the token being revoked); Unauthenticated otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise Unauthenticated("token is not a JWT (expected three dot-separated parts)")
        try:
            header = json.loads(_unb64(parts[0]))
            body: dict[str, Any] = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, RecursionError):
            raise Unauthenticated("token is malformed (bad base64url or JSON)") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64 \
                or not isinstance(body, dict):
            raise Unauthenticated("token is not an ES256 JWT")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        try:
            self._pub.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Unauthenticated("token signature is invalid (not issued by this "
                                  "control plane)") from None
        return body

    def _verified(self, token: str, audience: str) -> tuple[dict[str, Any], int, int]:
        """The body of a token signed by this authority for AUDIENCE, unexpired and not
        revoked, with its iat and exp."""
        body = self.signed_body(token)
        if body.get("iss") != ISSUER or body.get("aud") != audience:
            what = "an operator credential" if audience == OPERATOR_AUDIENCE else \
                "a workload credential"
            raise Unauthenticated(f"token is not {what} of this control plane "
                                  f"(iss={body.get('iss')!r}, aud={body.get('aud')!r})")
        now = self._clock()
        exp, iat = body.get("exp"), body.get("iat")
        if type(exp) is not int or type(iat) is not int:
            raise Unauthenticated("token claims are incomplete (sub, iat, exp)")
        if exp <= now:
            raise Unauthenticated(f"token expired {int(now - exp)}s ago (jti {body.get('jti')})")
        if iat > now + LEEWAY:
            raise Unauthenticated("token is issued in the future (clock skew?)")
        if self.revocations.revoked(str(body.get("jti", ""))):
            raise Unauthenticated(f"token {body.get('jti')} has been revoked")
        return body, iat, exp


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

