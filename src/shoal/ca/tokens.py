"""Attestation tokens: compact JWS (ES256) minted by the control plane for one identity.

A token says "whoever holds this may obtain certificates for spiffe://TD/ns/NS/sa/SA
and register workloads of NS running as SA until exp". Claims: iss ``shoal``, aud
``shoal-ca``, sub (the SPIFFE ID), ns, sa, iat, exp, jti. Implemented with
``cryptography`` only (no JWT library): the format is small and fixed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
AUDIENCE = "shoal-ca"
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


class TokenAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, trust_domain: str, *,
                 clock: Callable[[], float] = time.time):
        self._key = key
        self._pub = key.public_key()
        self._td = trust_domain
        self._clock = clock
        der = self._pub.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = hashlib.sha256(der).hexdigest()[:16]

    def create(self, namespace: str, service_account: str, ttl_seconds: float) -> tuple[
            str, TokenClaims]:
        if ttl_seconds < 1:
            raise ValidationError([Violation("ttlSeconds", "must be at least 1 second")])
        sid = SpiffeId.parse(SpiffeId(self._td, namespace, service_account).uri)
        iat = int(self._clock())
        claims = TokenClaims(sid, iat, iat + int(ttl_seconds), uuid.uuid4().hex)
        header = {"alg": "ES256", "typ": "JWT", "kid": self.key_id}
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sid.uri, "ns": namespace,
                "sa": service_account, "iat": iat, "exp": claims.expires_at,
                "jti": claims.jti}
        signing_input = f"{_b64(_json(header))}.{_b64(_json(body))}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(sig)}", claims

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; :class:`Unauthenticated` saying why when it is not valid."""
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise Unauthenticated("token is not a JWT (expected three dot-separated parts)")
        try:
            header = json.loads(_unb64(parts[0]))
            body: dict[str, Any] = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except ValueError:
            raise Unauthenticated("token is malformed (bad base64url or JSON)") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64:
            raise Unauthenticated("token is not an ES256 JWT")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        try:
            self._pub.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Unauthenticated("token signature is invalid (not issued by this "
                                  "control plane)") from None
        if body.get("iss") != ISSUER or body.get("aud") != AUDIENCE:
            raise Unauthenticated(f"token is not for this CA (iss={body.get('iss')!r}, "
                                  f"aud={body.get('aud')!r})")
        now = self._clock()
        try:
            exp, iat = int(body["exp"]), int(body["iat"])
            sid = SpiffeId.parse(str(body["sub"]))
        except (KeyError, TypeError, ValueError, ValidationError):
            raise Unauthenticated("token claims are incomplete (sub, iat, exp)") from None
        if exp <= now:
            raise Unauthenticated(f"token expired {int(now - exp)}s ago (jti {body.get('jti')})")
        if iat > now + LEEWAY:
            raise Unauthenticated("token is issued in the future (clock skew?)")
        if sid.trust_domain != self._td or body.get("ns") != sid.namespace \
                or body.get("sa") != sid.service_account:
            raise Unauthenticated("token claims are inconsistent with its subject")
        return TokenClaims(sid, iat, exp, str(body.get("jti", "")))


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

