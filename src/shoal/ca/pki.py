"""X.509 building blocks (pure functions over ``cryptography`` objects): keys, roots,
leaf SVIDs, server certificates, PEM in and out, and a readable summary of a certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.errors import ValidationError, Violation

BACKDATE = dt.timedelta(minutes=5)  # clock skew between the CA and its relying parties
ROOT_TTL = dt.timedelta(days=3650)
Key = ec.EllipticCurvePrivateKey


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def serial() -> int:
    return secrets.randbits(127) | 1  # positive, non-zero, < 20 bytes


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> Key:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationError([Violation("key", "only EC private keys are supported")])
    return key


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_certs(pem: bytes | str) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValidationError([Violation("certificate", f"not a PEM certificate: {e}")]) from None


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name(cn: str, org: str = "shoal") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_root(key: Key, trust_domain: str, *, ttl: dt.timedelta = ROOT_TTL,
              generation: int = 1) -> x509.Certificate:
    start = now() - BACKDATE
    pub = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(_name(f"shoal root CA {generation} ({trust_domain})", trust_domain))
            .issuer_name(_name(f"shoal root CA {generation} ({trust_domain})", trust_domain))
            .public_key(pub).serial_number(serial())
            .not_valid_before(start).not_valid_after(start + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .sign(key, hashes.SHA256()))


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, key_encipherment=True, content_commitment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)


def sign_leaf(
    public_key: Any,
    issuer: x509.Certificate,
    issuer_key: Key,
    *,
    ttl: dt.timedelta,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    common_name: str = "",
    attestation: str = "",
) -> x509.Certificate:
    """A leaf usable as TLS server and client (EKU serverAuth+clientAuth). ``attestation``:
    the id of the token the identity was first proven with, kept in the subject's
    serialNumber and carried over by renewals (so revoking the token ends them)."""
    start = now() - BACKDATE
    end = min(start + BACKDATE + ttl, issuer.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal")]
                                       + ([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                                          if common_name else [])
                                       + ([x509.NameAttribute(NameOID.SERIAL_NUMBER,
                                                              attestation)]
                                          if attestation else [])))
               .issuer_name(issuer.subject).public_key(public_key).serial_number(serial())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_leaf_usage(), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def attestation_of(cert: x509.Certificate) -> str:
    """The attestation token id a workload certificate carries ("" if none)."""
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else ""


def uri_sans(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


def dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """A JSON-friendly summary (what `shoal get certs` and `shoal ca status` print)."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "notBefore": cert.not_valid_before_utc.isoformat(),
        "notAfter": cert.not_valid_after_utc.isoformat(),
        "uris": uri_sans(cert),
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex()[:32],
    }


def bundle_pem(certs: Iterable[x509.Certificate]) -> list[str]:
    return [cert_pem(c) for c in certs]


INTERMEDIATE_TTL = dt.timedelta(days=365)


def make_intermediate(key: Key, issuer: x509.Certificate, issuer_key: Key, *, name: str,
                      trust_domain: str, ttl: dt.timedelta = INTERMEDIATE_TTL
                      ) -> x509.Certificate:
    """A CA certificate below ``issuer`` (one per cluster under a shared root): it may sign
    leaves only (path length 0)."""
    start = now() - BACKDATE
    pub = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(_name(f"shoal intermediate CA {name} ({trust_domain})", trust_domain))
            .issuer_name(issuer.subject).public_key(pub).serial_number(serial())
            .not_valid_before(start)
            .not_valid_after(min(start + ttl, issuer.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
