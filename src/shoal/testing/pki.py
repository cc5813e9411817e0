"""Throwaway PKI for tests and benchmarks: a CA (EC P-256) issuing leaf certificates and
CRLs, and an RS256 JWT issuer with its JWKS.

    ca = TestCA("edge CA")
    ca_file = ca.write(tmp / "ca.pem")
    server = ca.leaf("edge", dns=["a.example.com"], client=False).write(tmp, "edge")
    svid = ca.leaf(uris=["spiffe://cluster.local/ns/default/sa/web"])  # PEMs in memory
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _validity(builder: Any, days: int) -> Any:
    now = dt.datetime.now(dt.UTC)
    return (builder.not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days)))


class LeafFiles(NamedTuple):
    cert: Path
    key: Path


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, directory: Path, name: str) -> LeafFiles:
        """``<name>.pem`` and ``<name>.key`` (mode 0600) in ``directory``."""
        return LeafFiles(_write(directory / f"{name}.pem", self.cert_pem),
                         _write(directory / f"{name}.key", self.key_pem, 0o600))


class TestCA:
    """A self-signed root (valid for two days) whose leaves are valid for one day."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "shoal test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = _validity(
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number()), 2,
        ).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True,
        ).add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True,
        ).sign(self.key, hashes.SHA256())

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    def write(self, path: Path) -> Path:
        """The root certificate as a PEM file (what a proxy is told to trust)."""
        return _write(path, self.pem)

    def leaf(self, common_name: str | None = None, *, dns: Iterable[str] = (),
             ips: Iterable[str] = (), uris: Iterable[str] = (),
             server: bool = True, client: bool = True) -> Leaf:
        """A leaf with these SANs; ``server``/``client`` pick its extended key usages.
        Without a common name the subject is empty and the SAN extension critical."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                            if common_name else [])
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) \
            + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = _validity(
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number()), 1,
        ).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans),
                                            critical=not common_name)
        return Leaf(builder.sign(self.key, hashes.SHA256()), key)

    def crl(self, revoked: Iterable[x509.Certificate] = ()) -> bytes:
        """A PEM CRL revoking ``revoked`` (certificates this CA issued)."""
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now).next_update(now + dt.timedelta(days=1)))
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(now).build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(_PEM)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(i: int) -> str:
    return _b64(i.to_bytes((i.bit_length() + 7) // 8, "big"))


class JwtIssuer:
    def __init__(self, issuer: str, kid: str = "k1"):
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> str:
        n = self.key.public_key().public_numbers()
        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig",
                                     "kid": self.kid, "n": _int(n.n), "e": _int(n.e)}]})

    def token(self, sub: str = "user-1", *, expires_in: int = 3600, issuer: str | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": issuer or self.issuer, "sub": sub, "iat": now - 10,
                   "exp": now + expires_in, **claims}
        signing_input = (_b64(json.dumps(header).encode()) + "."
                         + _b64(json.dumps(payload).encode()))
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64(sig)
